// Runs Google Benchmark as usual, then prints one line per (baseline, ours)
// pair: the ratio of their real times per iteration, measured in this run.
#pragma once

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace virtcap::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(::isatty(1) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs)
      if (!r.error_occurred && r.run_type == Run::RT_Iteration)
        ns_[r.benchmark_name()] =
            r.real_accumulated_time / static_cast<double>(r.iterations);  // seconds, unit-free
  }
  const std::map<std::string, double>& times() const { return ns_; }

 private:
  std::map<std::string, double> ns_;
};

struct Pair {
  std::string baseline;
  std::string ours;
  std::string what;
};

inline int run_with_ratios(int argc, char** argv, const std::vector<Pair>& pairs) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("\n");
  for (const auto& p : pairs) {
    auto b = reporter.times().find(p.baseline), o = reporter.times().find(p.ours);
    if (b == reporter.times().end() || o == reporter.times().end() || o->second <= 0) continue;
    std::printf("RATIO %-48s baseline %-40s / ours %-40s = %.1fx\n", p.what.c_str(), p.baseline.c_str(),
                p.ours.c_str(), b->second / o->second);
  }
  benchmark::Shutdown();
  return 0;
}

}  // namespace virtcap::bench
