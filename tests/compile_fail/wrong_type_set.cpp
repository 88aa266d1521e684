// A bool where the schema declares a set of image formats does not compile.
// EXPECT-ERROR: ^could not convert .true. from .bool. to .virtcap::ImageFormats.
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.image_formats = true};
int main() { return 0; }
