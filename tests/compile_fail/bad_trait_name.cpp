// A trait that is not os-traits style (^[A-Z][A-Z0-9_]*$) does not compile.
// EXPECT-ERROR: static assertion failed: a trait must match
#include "virtcap/capability_schema.h"
#define BAD_LIST(X) X(bool, supports_vtpm, false, "compute-vtpm", "Emulated TPM")
VIRTCAP_DEFINE_CAPABILITIES(BadCaps, BAD_LIST);
int main() { return 0; }
