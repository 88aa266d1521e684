// How often one host may report ([fleet_service] host_reports_per_minute).
// An agent reports once a report_interval (60 s by default) and retries a
// failed report a few times with back-off; a host that writes hundreds of
// reports a second is not an agent doing its job, and every one of those
// writes holds the database's write lock that the other hosts' reports
// wait for. A refused report costs no parse and no database work.
//
// One token bucket per host name: it holds up to per_minute tokens (the
// burst), refills at per_minute a minute, and a report takes one. Buckets
// that have refilled to full are dropped as the map grows, so the map holds
// about the hosts that reported within the last minute. Per process: each
// replica of a fleet service counts its own.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/mutex.h"

namespace virtcap::fleet {

class HostRateLimit {
 public:
  using Clock = std::chrono::steady_clock;

  struct Refusal {
    std::chrono::milliseconds retry_after;  // until the bucket holds a token again
    bool first;                             // the first refusal since this host's last accepted report
  };

  // per_minute 0: no limit.
  explicit HostRateLimit(unsigned per_minute) : per_minute_(per_minute) {}

  unsigned per_minute() const { return per_minute_; }

  // nullopt: the report may go ahead (it took a token). Else why not.
  std::optional<Refusal> take(std::string_view host, Clock::time_point now) EXCLUDES(mu_) {
    if (per_minute_ == 0) return std::nullopt;
    const double cap = per_minute_;
    const double per_ms = cap / 60000.0;
    MutexLock lock(mu_);
    auto it = buckets_.find(host);
    if (it == buckets_.end()) {
      if (buckets_.size() >= prune_at_) prune(now);
      it = buckets_.emplace(std::string(host), Bucket{cap, now, false}).first;
    }
    Bucket& b = it->second;
    b.tokens = level(b, now);
    b.at = now;
    if (b.tokens >= 1.0) {
      b.tokens -= 1.0;
      b.refused = false;
      return std::nullopt;
    }
    const bool first = !b.refused;
    b.refused = true;
    const auto wait =
        std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil((1.0 - b.tokens) / per_ms)));
    return Refusal{std::max(wait, std::chrono::milliseconds(1)), first};
  }

  // Hosts with a bucket now (tests).
  std::size_t tracked() const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return buckets_.size();
  }

 private:
  struct Bucket {
    double tokens;
    Clock::time_point at;  // when tokens was last brought up to date
    bool refused;          // the last report was refused
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  double level(const Bucket& b, Clock::time_point now) const {
    const double elapsed_ms = std::chrono::duration<double, std::milli>(now - b.at).count();
    return std::min<double>(per_minute_, b.tokens + std::max(0.0, elapsed_ms) * per_minute_ / 60000.0);
  }

  // Drops every bucket that has refilled to full: it says nothing a new one
  // would not. The next prune waits until the map has doubled again.
  void prune(Clock::time_point now) REQUIRES(mu_) {
    std::erase_if(buckets_, [&](const auto& kv) { return level(kv.second, now) >= per_minute_; });
    prune_at_ = std::max<std::size_t>(kMinPruneAt, 2 * buckets_.size());
  }

  static constexpr std::size_t kMinPruneAt = 1024;
  const unsigned per_minute_;
  mutable Mutex mu_;
  std::unordered_map<std::string, Bucket, Hash, std::equal_to<>> buckets_ GUARDED_BY(mu_);
  std::size_t prune_at_ GUARDED_BY(mu_) = kMinPruneAt;
};

}  // namespace virtcap::fleet
