// The in-memory fleet index: per trait a bitset over host slots, per host its
// free capacity and last-seen time. Queries and explanations never touch the
// database. Changes are applied incrementally (apply/remove) from the
// records the store returns; rebuild() replaces everything from a full load.
// Thread-safe: queries share a reader lock, changes take the writer lock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "fleet/bitset.h"
#include "fleet/model.h"
#include "fleet/query.h"
#include "fleet/trait_list.h"

namespace virtcap::fleet {

struct HostMatch {
  std::string name;
  std::string uuid;
  std::array<std::optional<std::int64_t>, kResourceClassCount> free;  // none: class not inventoried
  std::int64_t last_seen_age_ms = 0;
};

// Why a host is left out. Order of checks (and so of "first failing reason"):
// required traits (in name order), forbidden traits, any-of groups, resources
// (VCPU, MEMORY_MB, DISK_GB), down.
struct Exclusion {
  enum class Kind : std::uint8_t {
    missing_required,
    has_forbidden,
    none_of_any_of,
    not_enough_resource,
    down
  };
  Kind kind = Kind::missing_required;
  std::string trait{};                // missing_required, has_forbidden
  bool trait_known = true;            // false: no host has this trait at all
  std::vector<std::string> any_of{};  // none_of_any_of
  ResourceClass resource = ResourceClass::vcpu;
  std::int64_t asked = 0;              // not_enough_resource
  std::optional<std::int64_t> free{};  // for one host: its free; in a breakdown: the most free among them
  std::int64_t last_seen_age_ms = 0;   // down: for one host its age; in a breakdown the smallest age
  std::size_t hosts = 0;               // in a breakdown: how many hosts have this as their first reason

  // One sentence, e.g. "missing required trait CUSTOM_X (no host has it)".
  std::string describe() const;
};
std::string_view to_string(Exclusion::Kind kind);

struct Answer {
  std::size_t matched = 0;
  std::vector<HostMatch> hosts;  // the first `limit` matches in slot order, listed by name
  std::uint64_t index_generation = 0;
  std::size_t hosts_total = 0;
  // How the index walked: "" for a full AND over every word, else the
  // required trait or "in:A,B" group it started from (the rarest).
  std::string started_from;
  // With explain: the excluded hosts by first failing reason; the counts sum
  // to hosts_total - matched.
  std::vector<Exclusion> excluded;
};

struct HostExplanation {
  HostMatch host;
  bool matches = false;
  std::vector<Exclusion> reasons;  // every reason, empty when it matches
  std::uint64_t index_generation = 0;
};

// What the index knows of a host: for comparing with the store.
struct IndexedHost {
  std::string name;
  std::string uuid;
  std::int64_t generation = 0;
  std::int64_t last_seen_ms = 0;
  std::vector<HostTrait> traits;  // sorted by name; owner from the CUSTOM_ rule
  std::array<std::optional<std::int64_t>, kResourceClassCount> free;
  bool operator==(const IndexedHost&) const = default;
};
IndexedHost to_indexed(const HostRecord& record);

class HostIndex {
 public:
  explicit HostIndex(std::chrono::milliseconds host_down_after);

  // Upserts a host. A record with a lower generation than the indexed one is
  // ignored (returns false); otherwise returns true. Costs the host's own
  // traits; a trait that no host holds afterwards is forgotten.
  bool apply(const HostRecord& record);
  // Upserts a record a write of this process has just committed, unless
  // the index already holds a later state of the host: a higher generation
  // (older_generation: a later write, or the host deleted and registered
  // again; only a re-read can tell) or the same one seen later
  // (older_sighting: two heartbeats applied out of order).
  enum class Applied : std::uint8_t { applied, older_generation, older_sighting };
  Applied apply_written(const HostRecord& record);
  // Removes a host; false if it was not indexed.
  bool remove(std::string_view name);
  // Replaces everything with `records`.
  void rebuild(const std::vector<HostRecord>& records);
  // Replaces everything with what `fresh` holds (built off to the side, so
  // queries go on meanwhile); `fresh` is left with the old contents, to be
  // freed outside this index's lock. The generation still moves forward.
  void replace_with(HostIndex& fresh);

  // Drift checks, a page of database records at a time: compare() names the
  // records the index has not, or has otherwise, and marks the hosts it saw;
  // unseen() then names the indexed hosts no page had. Costs one bit per slot.
  class Seen {
    friend class HostIndex;
    std::vector<bool> slots_;
  };
  std::vector<std::string> compare(const std::vector<HostRecord>& page, Seen& seen) const;
  std::vector<std::string> unseen(const Seen& seen) const;

  Answer query(const Query& q, std::int64_t now_ms, bool explain) const;
  // Every matching slot (all of them, no limit): the benchmark's (b).
  std::vector<std::uint32_t> match_all(const Query& q, std::int64_t now_ms) const;
  // not_found when the host is not indexed.
  Result<HostExplanation> explain_host(const Query& q, std::string_view name, std::int64_t now_ms) const;

  std::vector<IndexedHost> snapshot() const;  // sorted by name
  std::optional<std::string> slot_name(std::uint32_t slot) const;
  // The indexed host's generation; nullopt when it is not indexed.
  std::optional<std::int64_t> host_generation(std::string_view name) const;
  // Whether the index holds this version of the host or a later one: a
  // higher generation, or this one seen this late or later. (Notifications
  // come in commit order, and a delete's is always read, so a higher
  // generation is never an earlier incarnation of the name.)
  bool holds(std::string_view name, std::int64_t generation, std::int64_t last_seen_ms) const;
  std::uint64_t generation() const;
  std::size_t host_count() const;
  std::size_t trait_count() const;
  std::size_t memory_bytes() const;
  std::chrono::milliseconds host_down_after() const { return down_after_; }

 private:
  struct Plan;
  struct Slot {
    std::array<std::uint8_t, 16> uuid{};
    std::int64_t generation = 0;
    std::int64_t last_seen_ms = 0;
    std::array<std::int64_t, kResourceClassCount> free{};  // kNoInventory: not inventoried
  };
  static constexpr std::int64_t kNoInventory = INT64_MIN;

  // Name lookup: open addressing over slot numbers, keyed by names_[slot].
  std::optional<std::uint32_t> find_slot(std::string_view name) const REQUIRES_SHARED(mu_);
  void table_insert(std::uint32_t slot) REQUIRES(mu_);
  void table_erase(std::uint32_t slot) REQUIRES(mu_);
  void table_rehash(std::size_t capacity) REQUIRES(mu_);
  std::uint32_t trait_id(const std::string& name) REQUIRES(mu_);  // creates (reusing a released id)
  // Frees a trait no host holds any more: its name, bitset and id.
  void release_trait(std::uint32_t id) REQUIRES(mu_);
  std::uint32_t new_slot() REQUIRES(mu_);
  void grow_words(std::size_t words) REQUIRES(mu_);
  void clear_slot_traits(std::uint32_t slot) REQUIRES(mu_);
  void apply_locked(const HostRecord& record) REQUIRES(mu_);

  Plan plan(const Query& q) const REQUIRES_SHARED(mu_);
  template <class F>
  void for_each_match(const Plan& p, std::int64_t now_ms, F&& f) const REQUIRES_SHARED(mu_);
  bool slot_passes(const Plan& p, std::uint32_t slot, std::int64_t now_ms) const REQUIRES_SHARED(mu_);
  std::vector<Exclusion> breakdown(const Plan& p, std::int64_t now_ms) const REQUIRES_SHARED(mu_);
  std::vector<Exclusion> reasons_for(const Plan& p, std::uint32_t slot, std::int64_t now_ms) const
      REQUIRES_SHARED(mu_);
  HostMatch match_of(std::uint32_t slot, std::int64_t now_ms) const REQUIRES_SHARED(mu_);
  IndexedHost indexed_of(std::uint32_t slot) const REQUIRES_SHARED(mu_);

  std::chrono::milliseconds down_after_;
  mutable SharedMutex mu_;
  std::uint64_t generation_ GUARDED_BY(mu_) = 0;
  std::size_t words_ GUARDED_BY(mu_) = 0;  // every SlotBits has exactly this many words
  std::vector<std::string> names_ GUARDED_BY(mu_);
  std::vector<Slot> slots_ GUARDED_BY(mu_);
  SlotBits used_ GUARDED_BY(mu_);
  std::vector<std::uint32_t> free_slots_ GUARDED_BY(mu_);
  std::vector<std::uint32_t> table_ GUARDED_BY(mu_);  // kEmptyEntry, kTombstone or a slot
  std::size_t table_used_ GUARDED_BY(mu_) = 0;
  std::size_t table_tombstones_ GUARDED_BY(mu_) = 0;
  std::unordered_map<std::string, std::uint32_t> trait_ids_ GUARDED_BY(mu_);  // live traits only
  std::vector<std::string> trait_names_ GUARDED_BY(mu_);                      // by id; "" for a released id
  std::vector<SlotBits> trait_bits_ GUARDED_BY(mu_);  // by id; empty for a released id
  std::vector<std::uint32_t> free_trait_ids_ GUARDED_BY(mu_);
  // Each slot's trait ids, sorted: a write costs the host's own traits, not
  // every trait the index knows.
  std::vector<TraitList> slot_traits_ GUARDED_BY(mu_);
};

}  // namespace virtcap::fleet
