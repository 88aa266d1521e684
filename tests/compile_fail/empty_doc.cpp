// A capability declared with an empty doc does not compile.
// EXPECT-ERROR: static assertion failed: every capability needs a non-empty one-line doc
#include "virtcap/capability_schema.h"
#define BAD_LIST(X) \
  X(bool, has_imagecache, false, "", "Has an image cache") \
  X(bool, supports_vtpm, false, "", "")
VIRTCAP_DEFINE_CAPABILITIES(BadCaps, BAD_LIST);
int main() { return 0; }
