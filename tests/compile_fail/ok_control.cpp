// Control: a correct override compiles (proves the harness's flags and paths).
#include "virtcap/capabilities.h"
constexpr virtcap::Capabilities kCaps{.has_imagecache = true,
                                      .image_formats = {virtcap::ImageFormat::qcow2},
                                      .max_vcpus = 8};
static_assert(kCaps.has_imagecache);
int main() { return 0; }
