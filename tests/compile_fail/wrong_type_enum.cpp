// An integer where the schema declares an enum does not compile.
// EXPECT-ERROR: virt_type|VirtType|conver
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.virt_type = 3};
int main() { return 0; }
