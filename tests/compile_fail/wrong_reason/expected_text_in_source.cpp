// Wrong-reason control (the harness must REJECT it): this fails to compile
// only because of a misspelt type name, on a source line that happens to
// contain the expected text. GCC echoes that line back; a harness matching
// the whole output would call this "failed as expected".
// EXPECT-ERROR: two capabilities share one name
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilitiez kCaps{}; const char* kWhy = "two capabilities share one name";
int main() { return 0; }
