// Replays fuzz inputs through a libFuzzer entry point without libFuzzer, so
// the normal g++ build (and `scripts/test --quick`) runs every seed corpus:
//   <target>_replay FILE_OR_DIR...
// Every file (directories: every regular file in them, sorted) is passed to
// LLVMFuzzerTestOneInput once. A crash or abort fails the run; so does an
// input that takes longer than 10 s (as libFuzzer's -timeout=10), and so does
// finding no input at all (a missing corpus is not a pass).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

constexpr unsigned kPerInputSeconds = 10;
char g_current[4096];

void on_alarm(int) {
  const char msg[] = "fuzz replay: input took longer than 10 s: ";
  (void)!::write(2, msg, sizeof msg - 1);
  (void)!::write(2, g_current, std::strlen(g_current));
  (void)!::write(2, "\n", 1);
  ::_exit(1);
}

bool collect(const std::filesystem::path& arg, std::vector<std::filesystem::path>& out) {
  std::error_code ec;
  if (std::filesystem::is_directory(arg, ec)) {
    for (const auto& e : std::filesystem::directory_iterator(arg, ec))
      if (e.is_regular_file()) out.push_back(e.path());
    if (ec) {
      std::fprintf(stderr, "fuzz replay: cannot list %s: %s\n", arg.c_str(), ec.message().c_str());
      return false;
    }
    return true;
  }
  if (std::filesystem::is_regular_file(arg, ec)) {
    out.push_back(arg);
    return true;
  }
  std::fprintf(stderr, "fuzz replay: %s is neither a file nor a directory\n", arg.c_str());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i)
    if (!collect(argv[i], inputs)) return 2;
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "fuzz replay: no inputs (usage: %s FILE_OR_DIR...)\n", argv[0]);
    return 2;
  }
  ::signal(SIGALRM, on_alarm);
  for (const auto& p : inputs) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "fuzz replay: cannot read %s\n", p.c_str());
      return 2;
    }
    std::snprintf(g_current, sizeof g_current, "%s", p.c_str());
    ::alarm(kPerInputSeconds);
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ::alarm(0);
  }
  std::printf("fuzz replay: %zu inputs, no crash\n", inputs.size());
  return 0;
}
