#include "compute/fleet_reporter.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "capabilities/render.h"
#include "common/fd.h"
#include "common/uuid.h"
#include "compute/manager.h"
#include "fleet/wire.h"
#include "http/client.h"
#include "imagecache/base_cache.h"
#include "virtcap/version.h"

namespace virtcap::compute {

namespace {

constexpr std::int64_t kMiB = 1024 * 1024, kGiB = 1024 * kMiB;

// The inventories: VCPU and MEMORY_MB totals from the hypervisor, DISK_GB
// from the instances filesystem, reserved amounts and allocation ratios
// from [compute]. A hypervisor that cannot answer fails the report.
Result<fleet::Inventories> host_inventory(ComputeDriver& driver, const config::Config& cfg) {
  auto host = driver.host_resources();
  if (!host.ok()) return host.error();
  const auto& c = cfg.compute;
  fleet::Inventories inv;
  inv[0] = fleet::Inventory{host->vcpus, c.reserved_host_cpus, c.cpu_allocation_ratio, 0};
  inv[1] = fleet::Inventory{host->memory_mb, c.reserved_host_memory_mb, c.ram_allocation_ratio, 0};
  struct statvfs fs {};
  std::string probe = cfg.instances_path();
  while (::statvfs(probe.c_str(), &fs) != 0) {
    if (const int err = errno; err != ENOENT || probe.size() <= 1)
      return make_error(Errc::io_error,
                        "cannot measure the filesystem of " + probe + ": " + std::strerror(err));
    probe = probe.substr(0, std::max<std::size_t>(1, probe.rfind('/')));
  }
  const auto total = static_cast<std::int64_t>(fs.f_blocks * fs.f_frsize / kGiB);
  const auto used = static_cast<std::int64_t>((fs.f_blocks - fs.f_bavail) * fs.f_frsize / kGiB);
  const std::int64_t disk_reserved_gb = (std::int64_t{c.reserved_host_disk_mb} * kMiB + kGiB - 1) / kGiB;
  inv[2] = fleet::Inventory{total, disk_reserved_gb, c.disk_allocation_ratio, std::min(used, total)};
  for (std::size_t rc = 0; rc < inv.size(); ++rc)
    if (auto st = fleet::check_inventory(static_cast<fleet::ResourceClass>(rc), *inv[rc]); !st.ok())
      return make_error(Errc::invalid_argument, st.error().message +
                                                    "; check [compute] reserved_host_* against what "
                                                    "this host has");
  return inv;
}

}  // namespace

PeriodicTask FleetReporter::task() {
  const auto& f = mgr_.config().fleet;
  // At start, without jitter: a restarted agent is back in the fleet at once.
  PeriodicTask t{std::string(kFleetReportTask), static_cast<double>(f.report_interval), FirstRun::at_start,
                 "", [this](std::stop_token st) { return run(st); }};
  if (f.url.empty()) t.disabled_reason = "[fleet] url is empty: standalone, nothing is reported";
  return t;
}

void FleetReporter::set_api_url(std::string url) {
  MutexLock lock(mu_);
  api_url_ = std::move(url);
}

// <state_path>/host_uuid, created (written, fsynced, renamed) at the first report.
Result<std::string> FleetReporter::host_uuid() {
  MutexLock lock(mu_);
  if (!uuid_.empty()) return uuid_;
  const std::string dir = mgr_.config().defaults.state_path, path = dir + "/host_uuid";
  std::ifstream in(path);
  std::string line;
  if (in && std::getline(in, line) && is_uuid(line)) return uuid_ = line;
  if (in) return make_error(Errc::io_error, path + " does not hold a uuid; remove it to get a new one");
  const std::string fresh = new_uuid(), tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  const std::string text = fresh + "\n";
  if (!fd.valid() || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd.get()) != 0 || ::close(fd.release()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error(Errc::io_error, "cannot write " + path + ": " + std::strerror(errno));
  if (auto st = imagecache::fsync_dir(dir); !st.ok()) return st.error();
  return uuid_ = fresh;
}

Result<fleet::AgentReport> FleetReporter::build() {
  auto uuid = host_uuid();
  if (!uuid.ok()) return uuid.error();
  auto list = mgr_.list();
  if (!list.ok()) return list.error();
  fleet::AgentReport r;
  r.name = mgr_.config().host();
  r.uuid = *uuid;
  r.agent_version = VIRTCAP_VERSION;
  {
    MutexLock lock(mu_);
    r.api_url = api_url_;
  }
  r.traits = caps::traits(mgr_.capabilities());
  auto inv = host_inventory(mgr_.driver(), mgr_.config());
  if (!inv.ok()) return inv.error();
  r.inventories = *inv;
  for (const auto& i : *list)
    if (i.vm_state != VmState::error && i.vm_state != VmState::deleted) {
      r.inventories[0]->used += i.vcpus;
      r.inventories[1]->used += i.memory_mb;
    }
  return r;
}

namespace {
// Why an answer that is not a successful report is one: the API's error
// message, or that the server is not a virtcap fleet service.
std::string unexpected_answer(const http::ClientResponse& r, const std::string& url) {
  const auto& b = r.body;
  if (b.is_object() && b.contains("error") && b["error"].is_object() && b["error"].contains("message") &&
      b["error"]["message"].is_string())
    return "HTTP " + std::to_string(r.status) + ": " + b["error"]["message"].get<std::string>();
  return "the server at " + url + " did not answer with virtcap's API (HTTP " + std::to_string(r.status) +
         ")";
}
}  // namespace

TaskOutcome FleetReporter::run(std::stop_token stop) {
  const auto& f = mgr_.config().fleet;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(f.report_interval);
  const auto max_backoff = std::chrono::milliseconds(std::max(1000, f.report_interval * 500));
  std::chrono::milliseconds backoff{1000};
  http::Client client(
      http::ClientOptions{.url = f.url,
                          .token = f.token,
                          .ca_file = f.ca_file,
                          .client_cert = f.tls_client_cert,
                          .client_key = f.tls_client_key,
                          // A report is small: a slow or endless answer ends the attempt.
                          .timeout = std::chrono::seconds(std::clamp(f.report_interval, 5, 30)),
                          .peer = "the fleet service",
                          .hint = "check [fleet] url and that `virtcap fleet serve` runs there",
                          .ca_hint = "set [fleet] ca_file to the CA that signed its certificate"});
  for (;;) {
    std::string why;
    if (auto r = build(); !r.ok()) {
      why = r.error().message;
    } else {
      const auto body = fleet::to_json(*r);
      auto res = client.call("PUT", "/v1/hosts/" + r->name, &body);
      const bool answered = res.ok() && res->status == 200 && res->body.is_object() &&
                            res->body.contains("generation") && res->body["generation"].is_number_integer();
      if (answered) {
        const auto gen = res->body["generation"].get<std::int64_t>();
        MutexLock lock(mu_);
        if (failures_ > 0)
          spdlog::info("fleet report to {} succeeded again after {} failure(s)", f.url, failures_);
        failures_ = 0;
        return TaskOutcome::ran("reported " + std::to_string(r->traits.size()) + " traits; host generation " +
                                std::to_string(gen));
      }
      why = !res.ok() ? res.error().message : unexpected_answer(*res, f.url);
    }
    {
      MutexLock lock(mu_);
      ++failures_;
    }
    const bool last = std::chrono::steady_clock::now() + backoff >= give_up;
    spdlog::warn(
        "fleet report to {} failed: {}; {}", f.url, why,
        last ? "next try at the next interval" : "retrying in " + std::to_string(backoff.count()) + " ms");
    if (last) return TaskOutcome::failed(why);
    // The back-off between attempts, interrupted at once by the agent's stop.
    if (sleep_unless_stopped(stop, backoff)) return TaskOutcome::failed(why + " (stopping)");
    backoff = std::min(backoff * 2, max_backoff);
  }
}

}  // namespace virtcap::compute
