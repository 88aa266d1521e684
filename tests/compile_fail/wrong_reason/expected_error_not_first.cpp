// Wrong-reason control (the harness must REJECT it): the expected static
// assertion does fire, but only after an unrelated first error (a misspelt
// type), so the case does not prove what it claims.
// EXPECT-ERROR: static assertion failed: two capabilities share one name
#include "virtcap/capability_schema.h"
virtcap::schema::Descriptorr kTypo;
#define BAD_LIST(X) \
  X(bool, has_imagecache, false, "", "Has an image cache") \
  X(bool, has_imagecache, true, "", "Has it again")
VIRTCAP_DEFINE_CAPABILITIES(BadCaps, BAD_LIST);
int main() { return 0; }
