#include "api/metrics.h"

#include <sstream>

#include "virtcap/version.h"

namespace virtcap::api {

namespace {

std::string escape_label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

void Metrics::request(const std::string& method, const std::string& route, int status) {
  MutexLock lock(mu_);
  ++requests_[{method, route, status}];
}

std::string Metrics::render(const Snapshot& snap) const {
  std::ostringstream os;
  {
    MutexLock lock(mu_);
    os << "# HELP virtcap_api_requests_total API requests by method, route and status.\n"
          "# TYPE virtcap_api_requests_total counter\n";
    for (const auto& [k, n] : requests_)
      os << "virtcap_api_requests_total{method=\"" << std::get<0>(k) << "\",route=\""
         << escape_label(std::get<1>(k)) << "\",status=\"" << std::get<2>(k) << "\"} " << n << "\n";
  }
  os << "# HELP virtcap_build_info The running virtcap: version and driver (always 1).\n"
        "# TYPE virtcap_build_info gauge\n"
     << "virtcap_build_info{version=\"" << escape_label(VIRTCAP_VERSION) << "\",driver=\""
     << escape_label(snap.driver) << "\"} 1\n"
     << "# HELP virtcap_hypervisor_connected Whether the driver's hypervisor connection is up (1) or not "
        "(0).\n"
        "# TYPE virtcap_hypervisor_connected gauge\n"
     << "virtcap_hypervisor_connected " << (snap.hypervisor_connected ? 1 : 0) << "\n"
     << "# HELP virtcap_instances Live instances of this host by vm_state.\n"
        "# TYPE virtcap_instances gauge\n";
  for (const auto& [state, n] : snap.instances_by_vm_state)
    os << "virtcap_instances{vm_state=\"" << escape_label(state) << "\"} " << n << "\n";
  os << "# HELP virtcap_task_runs_total Completed runs of each periodic task, by result.\n"
        "# TYPE virtcap_task_runs_total counter\n";
  for (const auto& t : snap.tasks)
    for (auto kind : {compute::TaskOutcome::Kind::ran, compute::TaskOutcome::Kind::skipped,
                      compute::TaskOutcome::Kind::failed})
      os << "virtcap_task_runs_total{task=\"" << t.name << "\",result=\"" << compute::to_string(kind)
         << "\"} " << t.runs_by_result[static_cast<int>(kind)] << "\n";
  os << "# HELP virtcap_task_last_duration_seconds Duration of each periodic task's last run.\n"
        "# TYPE virtcap_task_last_duration_seconds gauge\n";
  for (const auto& t : snap.tasks)
    os << "virtcap_task_last_duration_seconds{task=\"" << t.name << "\"} " << t.last_duration.count() << "\n";
  os << "# HELP virtcap_task_enabled Whether each periodic task is scheduled.\n"
        "# TYPE virtcap_task_enabled gauge\n";
  for (const auto& t : snap.tasks)
    os << "virtcap_task_enabled{task=\"" << t.name << "\"} " << (t.enabled ? 1 : 0) << "\n";
  const auto& ic = snap.image_cache;
  os << "# HELP virtcap_image_cache_passes_total Image-cache passes run (periodic, API and CLI alike).\n"
        "# TYPE virtcap_image_cache_passes_total counter\n"
     << "virtcap_image_cache_passes_total " << ic.passes << "\n"
     << "# HELP virtcap_image_cache_incomplete_passes_total Passes that removed nothing because something "
        "could not be read.\n"
        "# TYPE virtcap_image_cache_incomplete_passes_total counter\n"
     << "virtcap_image_cache_incomplete_passes_total " << ic.incomplete << "\n"
     << "# HELP virtcap_image_cache_files_removed_total Base files removed by image-cache passes.\n"
        "# TYPE virtcap_image_cache_files_removed_total counter\n"
     << "virtcap_image_cache_files_removed_total " << ic.files_removed << "\n"
     << "# HELP virtcap_image_cache_bytes_freed_total Bytes freed by image-cache passes.\n"
        "# TYPE virtcap_image_cache_bytes_freed_total counter\n"
     << "virtcap_image_cache_bytes_freed_total " << ic.bytes_freed << "\n";
  return os.str();
}

}  // namespace virtcap::api
