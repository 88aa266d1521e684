// An integer where the schema declares an enum does not compile.
// EXPECT-ERROR: ^cannot convert .int. to .virtcap::VirtType.
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.virt_type = 3};
int main() { return 0; }
