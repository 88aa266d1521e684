#include "fleet/metrics.h"

#include <cstdio>

namespace virtcap::fleet {

// GET /metrics: Prometheus text format 0.0.4.
std::string metrics_text(const Fleet& fleet, std::uint64_t reports_refused) {
  const Freshness f = fleet.freshness();
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, double value) {
    char v[64];
    std::snprintf(v, sizeof v, "%.17g", value);
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
           v + "\n";
  };
  metric("virtcap_fleet_database_up", "gauge", "1 while the fleet database can be reached, else 0.",
         f.database_down ? 0 : 1);
  metric("virtcap_fleet_database_unreachable_seconds", "gauge",
         "Seconds the fleet database has been unreachable (0 while reachable).",
         seconds(f.database_down_for));
  metric("virtcap_fleet_database_recoveries_total", "counter",
         "Database outages ended by a successful reconnect since start.",
         static_cast<double>(f.database_recoveries));
  metric("virtcap_fleet_index_current", "gauge",
         "1 while the index follows the database, 0 while it may be behind.", f.current ? 1 : 0);
  metric("virtcap_fleet_index_age_seconds", "gauge",
         "Seconds the index may have been behind the database (0 when current).", seconds(f.age));
  metric("virtcap_fleet_index_hosts", "gauge", "Hosts in the index.",
         static_cast<double>(fleet.index().host_count()));
  metric("virtcap_fleet_index_generation", "counter", "Changes applied to the index since start.",
         static_cast<double>(fleet.index().generation()));
  metric("virtcap_fleet_index_notification_batches_total", "counter",
         "Batches of other replicas' notifications applied to the index.",
         static_cast<double>(fleet.refreshes_from_notifications()));
  metric("virtcap_fleet_index_notifications_already_held_total", "counter",
         "Notifications of a version the index already held (this replica's own writes): not read again.",
         static_cast<double>(fleet.notifications_already_held()));
  metric("virtcap_fleet_reports_rate_limited_total", "counter",
         "Reports refused with 429 since start: their host was over [fleet_service] host_reports_per_minute.",
         static_cast<double>(reports_refused));
  return out;
}

}  // namespace virtcap::fleet
