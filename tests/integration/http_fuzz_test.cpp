// A bounded random-input run against a real `virtcap agent` process: inputs
// are the HTTP seed corpus (tests/fuzz/corpus/http_server) mutated with a
// fixed seed. Each must get well-formed HTTP or a closed connection, and the
// agent must stay up. The unbounded search is the libFuzzer target
// tests/fuzz/http_server_fuzz.cpp (scripts/test).
#include "support/http_fuzz.h"

#include <gtest/gtest.h>

#include <random>

#include "support/agent_process.h"

namespace virtcap::testing {
namespace {

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  for (const auto& e :
       fs::directory_iterator(std::string(VIRTCAP_SOURCE_DIR) + "/tests/fuzz/corpus/http_server"))
    out.push_back(read_file(e.path()));
  std::sort(out.begin(), out.end());  // a fixed order: the run is reproducible
  return out;
}

std::string mutate(std::string s, const std::vector<std::string>& pool, std::mt19937& rng) {
  static const std::string kSpecial[] = {std::string(1, '\0'),
                                         "\r\n",
                                         "\n",
                                         "\r",
                                         "\xff",
                                         "%",
                                         "%0a",
                                         "%00",
                                         ":",
                                         " ",
                                         "\r\n\r\n",
                                         "0\r\n\r\n",
                                         "-1\r\n",
                                         "Transfer-Encoding: chunked\r\n",
                                         "Content-Length: 99999999999\r\n",
                                         "\xc3\x28",
                                         "/{id}/",
                                         "?"};
  auto pick = [&](std::size_t n) {
    return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  const int steps = 1 + static_cast<int>(pick(4));
  for (int i = 0; i < steps; ++i) {
    const std::size_t at = pick(s.size() + 1);
    switch (pick(6)) {
      case 0:
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(pick(256));
        break;
      case 1: s.insert(at, kSpecial[pick(std::size(kSpecial))]); break;
      case 2: s.erase(at, pick(16)); break;
      case 3: s.insert(at, s.substr(pick(s.size() + 1), pick(64))); break;
      case 4: {
        const std::string& other = pool[pick(pool.size())];
        s = s.substr(0, at) + other.substr(pick(std::min<std::size_t>(32, other.size() + 1)));
        break;
      }
      default: s.insert(at, std::string(pick(3000), static_cast<char>('A' + pick(26)))); break;
    }
  }
  return s;
}

TEST(HttpFuzz, RandomInputsGetWellFormedAnswersOrACloseAndTheAgentStaysUp) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  const auto pool = seeds();
  ASSERT_GE(pool.size(), 10u);
  std::mt19937 rng(20261126);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int runs = 0;
  for (const auto& s : pool) {
    const auto problem = check_http_answer(agent.port(), s);
    ASSERT_TRUE(problem.empty()) << "seed input:\n" << s.substr(0, 300) << "\n" << problem;
    ++runs;
  }
  while (std::chrono::steady_clock::now() < end && runs < 5000) {
    const auto input = mutate(pool[runs % pool.size()], pool, rng);
    const auto problem = check_http_answer(agent.port(), input);
    ASSERT_TRUE(problem.empty()) << "input #" << runs << ":\n" << input.substr(0, 300) << "\n" << problem;
    ++runs;
  }
  RecordProperty("inputs", runs);
  auto health = agent.client().call("GET", "/healthz");
  ASSERT_TRUE(health.ok()) << "the agent died after " << runs << " inputs:\n" << agent.log();
  EXPECT_EQ(health->status, 200);
  EXPECT_GE(runs, 100) << "too few inputs ran in the time bound";
}

}  // namespace
}  // namespace virtcap::testing
