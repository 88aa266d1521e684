// Two capabilities with one name do not compile.
// EXPECT-ERROR: static assertion failed: two capabilities share one name
#include "virtcap/capability_schema.h"
#define BAD_LIST(X) \
  X(bool, has_imagecache, false, "", "Has an image cache") \
  X(bool, has_imagecache, true, "", "Has it again")
VIRTCAP_DEFINE_CAPABILITIES(BadCaps, BAD_LIST);
int main() { return 0; }
