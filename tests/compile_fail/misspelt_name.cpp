// A misspelt capability in a driver's declaration does not compile.
// EXPECT-ERROR: has no non-static data member named .has_imagecach.$
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.has_imagecach = true};
int main() { return 0; }
