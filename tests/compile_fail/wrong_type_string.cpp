// A string where the schema declares a bool does not compile (narrowing).
// EXPECT-ERROR: ^narrowing conversion of .* to .bool.
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.supports_vtpm = "yes"};
int main() { return 0; }
