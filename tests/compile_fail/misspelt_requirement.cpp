// The manager's operation->capability table cannot name a capability that
// does not exist.
// EXPECT-ERROR: ^.supports_attach_interfac. is not a member of .virtcap::Capabilities.$
#include "virtcap/capabilities.h"
constexpr bool virtcap::Capabilities::*kCap = &virtcap::Capabilities::supports_attach_interfac;
int main() { return 0; }
