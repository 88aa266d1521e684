// A bool where the schema declares a set of image formats does not compile.
// EXPECT-ERROR: image_formats|ImageFormats|conver
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.image_formats = true};
int main() { return 0; }
