// Two capabilities reporting one trait do not compile.
// EXPECT-ERROR: static assertion failed: two capabilities share one trait
#include "virtcap/capability_schema.h"
#define BAD_LIST(X) \
  X(bool, supports_attach_interface, false, "COMPUTE_NET_ATTACH_INTERFACE", "Hot-plug NICs") \
  X(bool, supports_tagged_attach_interface, false, "COMPUTE_NET_ATTACH_INTERFACE", "Tagged NICs")
VIRTCAP_DEFINE_CAPABILITIES(BadCaps, BAD_LIST);
int main() { return 0; }
