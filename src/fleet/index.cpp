#include "fleet/index.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <functional>
#include <iterator>
#include <mutex>

#include "common/strings.h"

namespace virtcap::fleet {

namespace {

constexpr std::uint32_t kEmptyEntry = 0xFFFFFFFFU;
constexpr std::uint32_t kTombstone = 0xFFFFFFFEU;

int hex_value(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

std::array<std::uint8_t, 16> uuid_bytes(std::string_view uuid) {
  std::array<std::uint8_t, 16> out{};
  std::size_t n = 0;
  for (std::size_t i = 0; i + 1 < uuid.size() && n < out.size(); ++i) {
    if (uuid[i] == '-') continue;
    out[n++] = static_cast<std::uint8_t>(hex_value(uuid[i]) << 4 | hex_value(uuid[i + 1]));
    ++i;
  }
  return out;
}

std::string uuid_text(const std::array<std::uint8_t, 16>& b) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return buf;
}

std::int64_t free_of(const std::optional<Inventory>& inv, std::int64_t none) {
  return inv ? inv->free() : none;
}

std::string seconds(std::int64_t ms) { return std::to_string(ms / 1000) + " s"; }

}  // namespace

std::string_view to_string(Exclusion::Kind kind) {
  switch (kind) {
    case Exclusion::Kind::missing_required: return "missing_required_trait";
    case Exclusion::Kind::has_forbidden: return "has_forbidden_trait";
    case Exclusion::Kind::none_of_any_of: return "none_of_any_of";
    case Exclusion::Kind::not_enough_resource: return "not_enough_resource";
    case Exclusion::Kind::down: return "down";
  }
  return "unknown";
}

std::string Exclusion::describe() const {
  switch (kind) {
    case Kind::missing_required:
      return "missing required trait " + trait + (trait_known ? "" : " (no host has this trait)");
    case Kind::has_forbidden: return "has forbidden trait " + trait;
    case Kind::none_of_any_of: {
      return "has none of the traits in:" + join(any_of, ",");
    }
    case Kind::not_enough_resource:
      return "not enough " + std::string(to_string(resource)) + ": asked " + std::to_string(asked) +
             ", free " + (free ? std::to_string(*free) : std::string("none (not inventoried)"));
    case Kind::down: return "down (last seen " + seconds(last_seen_age_ms) + " ago)";
  }
  return "unknown reason";
}

IndexedHost to_indexed(const HostRecord& r) {
  IndexedHost h{r.name, r.uuid, r.generation, r.last_seen_ms, r.traits, {}};
  for (auto& t : h.traits) t.owner = is_custom_trait(t.name) ? TraitOwner::operator_ : TraitOwner::agent;
  for (std::size_t i = 0; i < kResourceClassCount; ++i)
    if (r.inventories[i]) h.free[i] = r.inventories[i]->free();
  return h;
}

// A query resolved against the index: trait names to bitsets (nullptr: no
// host has it), and the cheapest way in.
struct HostIndex::Plan {
  const Query* q = nullptr;
  bool impossible = false;
  std::vector<const SlotBits*> required;  // aligned with q->required
  std::vector<const SlotBits*> forbidden;
  std::vector<std::vector<const SlotBits*>> any_of;  // aligned with q->any_of
  bool slot_checks = false;                          // resources or liveness to check per host
  enum class Driver : std::uint8_t { full_scan, required, any_of } driver = Driver::full_scan;
  std::size_t driver_at = 0;
};

HostIndex::HostIndex(std::chrono::milliseconds host_down_after) : down_after_(host_down_after) {}

std::optional<std::uint32_t> HostIndex::find_slot(std::string_view name) const {
  if (table_.empty()) return std::nullopt;
  const std::size_t mask = table_.size() - 1;
  for (std::size_t i = std::hash<std::string_view>{}(name)&mask;; i = (i + 1) & mask) {
    const std::uint32_t e = table_[i];
    if (e == kEmptyEntry) return std::nullopt;
    if (e != kTombstone && names_[e] == name) return e;
  }
}

void HostIndex::table_insert(std::uint32_t slot) {
  if ((table_used_ + table_tombstones_ + 1) * 2 > table_.size())
    table_rehash(std::max<std::size_t>(16, std::bit_ceil((table_used_ + 1) * 4)));
  const std::size_t mask = table_.size() - 1;
  std::size_t i = std::hash<std::string_view>{}(names_[slot]) & mask;
  while (table_[i] != kEmptyEntry && table_[i] != kTombstone) i = (i + 1) & mask;
  if (table_[i] == kTombstone) --table_tombstones_;
  table_[i] = slot;
  ++table_used_;
}

void HostIndex::table_erase(std::uint32_t slot) {
  const std::size_t mask = table_.size() - 1;
  for (std::size_t i = std::hash<std::string_view>{}(names_[slot]) & mask; table_[i] != kEmptyEntry;
       i = (i + 1) & mask) {
    if (table_[i] == slot) {
      table_[i] = kTombstone;
      --table_used_;
      ++table_tombstones_;
      return;
    }
  }
}

void HostIndex::table_rehash(std::size_t capacity) {
  std::vector<std::uint32_t> old;
  old.swap(table_);
  table_.assign(capacity, kEmptyEntry);
  table_used_ = table_tombstones_ = 0;
  const std::size_t mask = capacity - 1;
  for (std::uint32_t e : old) {
    if (e == kEmptyEntry || e == kTombstone) continue;
    std::size_t i = std::hash<std::string_view>{}(names_[e]) & mask;
    while (table_[i] != kEmptyEntry) i = (i + 1) & mask;
    table_[i] = e;
    ++table_used_;
  }
}

void HostIndex::grow_words(std::size_t words) {
  if (words <= words_) return;
  words = std::max(words, words_ * 2);
  words_ = words;
  used_.resize_words(words);
  for (std::size_t t = 0; t < trait_bits_.size(); ++t)
    if (!trait_names_[t].empty()) trait_bits_[t].resize_words(words);
}

std::uint32_t HostIndex::trait_id(const std::string& name) {
  auto it = trait_ids_.find(name);
  if (it != trait_ids_.end()) return it->second;
  std::uint32_t id = 0;
  if (!free_trait_ids_.empty()) {
    id = free_trait_ids_.back();
    free_trait_ids_.pop_back();
    trait_names_[id] = name;
  } else {
    id = static_cast<std::uint32_t>(trait_names_.size());
    trait_names_.push_back(name);
    trait_bits_.emplace_back();
  }
  trait_bits_[id].resize_words(words_);
  trait_ids_.emplace(name, id);
  return id;
}

void HostIndex::release_trait(std::uint32_t id) {
  trait_ids_.erase(trait_names_[id]);
  std::string().swap(trait_names_[id]);
  trait_bits_[id] = SlotBits{};
  free_trait_ids_.push_back(id);
}

std::uint32_t HostIndex::new_slot() {
  if (!free_slots_.empty()) {
    const auto s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  const auto s = static_cast<std::uint32_t>(slots_.size());
  slots_.emplace_back();
  names_.emplace_back();
  slot_traits_.emplace_back();
  grow_words(s / 64 + 1);
  return s;
}

void HostIndex::clear_slot_traits(std::uint32_t slot) {
  slot_traits_[slot].for_each([&](std::uint32_t id) {
    mu_.assert_held();
    trait_bits_[id].reset(slot);
    if (trait_bits_[id].count() == 0) release_trait(id);
  });
  slot_traits_[slot].clear();
}

void HostIndex::apply_locked(const HostRecord& r) {
  auto found = find_slot(r.name);
  std::uint32_t slot = 0;
  if (found) {
    slot = *found;
  } else {
    slot = new_slot();
    names_[slot] = r.name;
    table_insert(slot);
    used_.set(slot);
  }
  Slot& s = slots_[slot];
  s.uuid = uuid_bytes(r.uuid);
  s.generation = r.generation;
  s.last_seen_ms = r.last_seen_ms;
  for (std::size_t i = 0; i < kResourceClassCount; ++i) s.free[i] = free_of(r.inventories[i], kNoInventory);
  // The new set first, then what the host dropped: a trait it keeps is never
  // released and made again.
  std::vector<std::uint32_t> ids;
  ids.reserve(r.traits.size());
  for (const auto& t : r.traits) ids.push_back(trait_id(t.name));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (const auto id : ids) trait_bits_[id].set(slot);
  std::vector<std::uint32_t> dropped;
  const auto had = slot_traits_[slot].ids();
  std::set_difference(had.begin(), had.end(), ids.begin(), ids.end(), std::back_inserter(dropped));
  for (const auto id : dropped) {
    trait_bits_[id].reset(slot);
    if (trait_bits_[id].count() == 0) release_trait(id);
  }
  slot_traits_[slot].assign(ids);
  ++generation_;
}

bool HostIndex::apply(const HostRecord& record) {
  WriterLock lock(mu_);
  auto found = find_slot(record.name);
  if (found && slots_[*found].generation > record.generation) return false;
  apply_locked(record);
  return true;
}

HostIndex::Applied HostIndex::apply_written(const HostRecord& record) {
  WriterLock lock(mu_);
  if (auto found = find_slot(record.name)) {
    const Slot& s = slots_[*found];
    if (s.generation > record.generation) return Applied::older_generation;
    if (s.generation == record.generation && s.last_seen_ms > record.last_seen_ms)
      return Applied::older_sighting;
  }
  apply_locked(record);
  return Applied::applied;
}

bool HostIndex::remove(std::string_view name) {
  WriterLock lock(mu_);
  auto found = find_slot(name);
  if (!found) return false;
  const auto slot = *found;
  clear_slot_traits(slot);
  table_erase(slot);
  used_.reset(slot);
  names_[slot].clear();
  names_[slot].shrink_to_fit();
  slots_[slot] = Slot{};
  free_slots_.push_back(slot);
  ++generation_;
  return true;
}

void HostIndex::rebuild(const std::vector<HostRecord>& records) {
  HostIndex fresh(down_after_);
  {
    WriterLock built(fresh.mu_);
    for (const auto& r : records) fresh.apply_locked(r);
  }
  replace_with(fresh);
}

void HostIndex::replace_with(HostIndex& fresh) {
  WriterLock lock(mu_);
  WriterLock theirs(fresh.mu_);  // the caller's own, built aside: no other holder
  fresh.generation_ = generation_ + 1;
  std::swap(generation_, fresh.generation_);
  std::swap(words_, fresh.words_);
  std::swap(names_, fresh.names_);
  std::swap(slots_, fresh.slots_);
  std::swap(used_, fresh.used_);
  std::swap(free_slots_, fresh.free_slots_);
  std::swap(table_, fresh.table_);
  std::swap(table_used_, fresh.table_used_);
  std::swap(table_tombstones_, fresh.table_tombstones_);
  std::swap(trait_ids_, fresh.trait_ids_);
  std::swap(trait_names_, fresh.trait_names_);
  std::swap(trait_bits_, fresh.trait_bits_);
  std::swap(free_trait_ids_, fresh.free_trait_ids_);
  std::swap(slot_traits_, fresh.slot_traits_);
}

std::vector<std::string> HostIndex::compare(const std::vector<HostRecord>& page, Seen& seen) const {
  ReaderLock lock(mu_);
  std::vector<std::string> differ;
  for (const auto& r : page) {
    const auto slot = find_slot(r.name);
    if (!slot) {
      differ.push_back(r.name);
      continue;
    }
    if (seen.slots_.size() <= *slot) seen.slots_.resize(slots_.size());
    seen.slots_[*slot] = true;
    if (!(to_indexed(r) == indexed_of(*slot))) differ.push_back(r.name);
  }
  return differ;
}

std::vector<std::string> HostIndex::unseen(const Seen& seen) const {
  ReaderLock lock(mu_);
  std::vector<std::string> out;
  for (std::size_t w = 0; w < words_; ++w)
    for_each_bit(used_.data()[w], [&](unsigned bit) {
      mu_.assert_reader_held();
      const std::size_t slot = w * 64 + bit;
      if (slot >= seen.slots_.size() || !seen.slots_[slot]) out.push_back(names_[slot]);
    });
  return out;
}

HostIndex::Plan HostIndex::plan(const Query& q) const {
  Plan p;
  p.q = &q;
  auto lookup = [this](const std::string& name) -> const SlotBits* {
    mu_.assert_reader_held();
    auto it = trait_ids_.find(name);
    return it == trait_ids_.end() || trait_bits_[it->second].count() == 0 ? nullptr
                                                                          : &trait_bits_[it->second];
  };
  std::size_t best = words_;
  for (std::size_t i = 0; i < q.required.size(); ++i) {
    const auto* b = p.required.emplace_back(lookup(q.required[i]));
    if (b == nullptr) p.impossible = true;
    if (b != nullptr && b->nonzero_words() < best) {
      best = b->nonzero_words();
      p.driver = Plan::Driver::required;
      p.driver_at = i;
    }
  }
  for (const auto& f : q.forbidden) p.forbidden.push_back(lookup(f));
  for (std::size_t g = 0; g < q.any_of.size(); ++g) {
    auto& group = p.any_of.emplace_back();
    std::size_t cost = 0;
    for (const auto& t : q.any_of[g]) {
      group.push_back(lookup(t));
      cost += group.back() ? group.back()->nonzero_words() : 0;
    }
    if (cost == 0) p.impossible = true;
    if (cost < best) {
      best = cost;
      p.driver = Plan::Driver::any_of;
      p.driver_at = g;
    }
  }
  // Walking a sparse driver costs a summary scan plus its words; a full AND
  // costs every word. Prefer the driver when it touches under half the words.
  if (best * 2 >= words_) p.driver = Plan::Driver::full_scan;
  for (const auto& r : q.resources) p.slot_checks = p.slot_checks || (r && *r > 0);
  p.slot_checks = p.slot_checks || !q.include_down;
  return p;
}

bool HostIndex::slot_passes(const Plan& p, std::uint32_t slot, std::int64_t now_ms) const {
  const Slot& s = slots_[slot];
  for (std::size_t i = 0; i < kResourceClassCount; ++i) {
    const auto& asked = p.q->resources[i];
    if (asked && *asked > 0 && (s.free[i] == kNoInventory || s.free[i] < *asked)) return false;
  }
  return p.q->include_down || now_ms - s.last_seen_ms < down_after_.count();
}

template <class F>
void HostIndex::for_each_match(const Plan& p, std::int64_t now_ms, F&& f) const {
  if (p.impossible) return;
  std::vector<const std::uint64_t*> req, forb;
  std::vector<std::vector<const std::uint64_t*>> any;
  for (const auto* b : p.required) req.push_back(b->data());
  for (const auto* b : p.forbidden)
    if (b != nullptr) forb.push_back(b->data());
  for (const auto& g : p.any_of) {
    auto& out = any.emplace_back();
    for (const auto* b : g)
      if (b != nullptr) out.push_back(b->data());
  }
  const std::uint64_t* used = used_.data();
  auto visit = [&](std::size_t w) {
    std::uint64_t m = used[w];
    for (const auto* r : req) m &= r[w];
    for (const auto* b : forb) m &= ~b[w];
    for (const auto& g : any) {
      std::uint64_t o = 0;
      for (const auto* b : g) o |= b[w];
      m &= o;
    }
    for_each_bit(m, [&](unsigned bit) {
      mu_.assert_reader_held();
      const auto slot = static_cast<std::uint32_t>(w * 64 + bit);
      if (!p.slot_checks || slot_passes(p, slot, now_ms)) f(slot);
    });
  };
  if (p.driver == Plan::Driver::full_scan) {
    for (std::size_t w = 0; w < words_; ++w) visit(w);
    return;
  }
  std::vector<std::uint64_t> summary;
  if (p.driver == Plan::Driver::required) {
    summary = p.required[p.driver_at]->summary();
  } else {
    summary.assign((words_ + 63) / 64, 0);
    for (const auto* b : p.any_of[p.driver_at])
      if (b != nullptr)
        for (std::size_t i = 0; i < summary.size(); ++i) summary[i] |= b->summary()[i];
  }
  for (std::size_t sw = 0; sw < summary.size(); ++sw)
    for_each_bit(summary[sw], [&](unsigned b) { visit(sw * 64 + b); });
}

HostMatch HostIndex::match_of(std::uint32_t slot, std::int64_t now_ms) const {
  const Slot& s = slots_[slot];
  HostMatch m{names_[slot], uuid_text(s.uuid), {}, now_ms - s.last_seen_ms};
  for (std::size_t i = 0; i < kResourceClassCount; ++i)
    if (s.free[i] != kNoInventory) m.free[i] = s.free[i];
  return m;
}

Answer HostIndex::query(const Query& q, std::int64_t now_ms, bool explain) const {
  ReaderLock lock(mu_);
  const Plan p = plan(q);
  Answer a;
  a.index_generation = generation_;
  a.hosts_total = used_.count();
  for_each_match(p, now_ms, [&](std::uint32_t slot) {
    mu_.assert_reader_held();
    if (a.hosts.size() < q.limit) a.hosts.push_back(match_of(slot, now_ms));
    ++a.matched;
  });
  // Which `limit` hosts are returned follows slot order; they are listed by
  // name, so a fleet that fits in `limit` answers the same after a restart.
  std::sort(a.hosts.begin(), a.hosts.end(), [](const auto& x, const auto& y) { return x.name < y.name; });
  if (explain) a.excluded = breakdown(p, now_ms);
  if (p.driver == Plan::Driver::required) a.started_from = q.required[p.driver_at];
  if (p.driver == Plan::Driver::any_of) {
    a.started_from = "in:" + join(q.any_of[p.driver_at], ",");
  }
  return a;
}

std::vector<std::uint32_t> HostIndex::match_all(const Query& q, std::int64_t now_ms) const {
  ReaderLock lock(mu_);
  std::vector<std::uint32_t> out;
  for_each_match(plan(q), now_ms, [&](std::uint32_t slot) { out.push_back(slot); });
  return out;
}

// First failing reason per excluded host, in the documented order, done on
// whole words: `remaining` holds the hosts not yet excluded.
std::vector<Exclusion> HostIndex::breakdown(const Plan& p, std::int64_t now_ms) const {
  std::vector<Exclusion> out;
  std::vector<std::uint64_t> remaining(used_.data(), used_.data() + words_);
  // keep(w): the bits of word w that pass this check.
  auto word_step = [&](Exclusion e, auto keep) {
    mu_.assert_reader_held();
    for (std::size_t w = 0; w < words_; ++w) {
      const std::uint64_t pass = remaining[w] & keep(w);
      e.hosts += static_cast<std::size_t>(std::popcount(remaining[w] & ~pass));
      remaining[w] = pass;
    }
    if (e.hosts > 0) out.push_back(std::move(e));
  };
  for (std::size_t i = 0; i < p.required.size(); ++i) {
    const auto* b = p.required[i];
    Exclusion e{
        .kind = Exclusion::Kind::missing_required, .trait = p.q->required[i], .trait_known = b != nullptr};
    word_step(std::move(e), [b](std::size_t w) { return b ? b->data()[w] : 0; });
  }
  for (std::size_t i = 0; i < p.forbidden.size(); ++i) {
    const auto* b = p.forbidden[i];
    Exclusion e{
        .kind = Exclusion::Kind::has_forbidden, .trait = p.q->forbidden[i], .trait_known = b != nullptr};
    word_step(std::move(e), [b](std::size_t w) { return b ? ~b->data()[w] : ~std::uint64_t{0}; });
  }
  for (std::size_t g = 0; g < p.any_of.size(); ++g) {
    Exclusion e{.kind = Exclusion::Kind::none_of_any_of, .any_of = p.q->any_of[g]};
    word_step(std::move(e), [&p, g](std::size_t w) {
      std::uint64_t o = 0;
      for (const auto* b : p.any_of[g]) o |= b ? b->data()[w] : 0;
      return o;
    });
  }
  // Per-host checks: resources in class order, then liveness.
  auto slot_step = [&](Exclusion e, auto fails) {
    mu_.assert_reader_held();
    for (std::size_t w = 0; w < words_; ++w)
      for_each_bit(remaining[w], [&](unsigned bit) {
        const auto slot = static_cast<std::uint32_t>(w * 64 + bit);
        if (fails(slot, e)) {
          remaining[w] &= ~(std::uint64_t{1} << bit);
          ++e.hosts;
        }
      });
    if (e.hosts > 0) out.push_back(std::move(e));
  };
  for (auto rc : kAllResourceClasses) {
    const auto i = static_cast<std::size_t>(rc);
    const auto asked = p.q->resources[i];
    if (!asked || *asked == 0) continue;
    Exclusion e{.kind = Exclusion::Kind::not_enough_resource, .resource = rc, .asked = *asked};
    slot_step(std::move(e), [&](std::uint32_t slot, Exclusion& ex) {
      mu_.assert_reader_held();
      const auto f = slots_[slot].free[i];
      if (f != kNoInventory && f >= *asked) return false;
      if (f != kNoInventory && (!ex.free || f > *ex.free)) ex.free = f;
      return true;
    });
  }
  if (!p.q->include_down) {
    Exclusion e{.kind = Exclusion::Kind::down, .last_seen_age_ms = INT64_MAX};
    slot_step(std::move(e), [&](std::uint32_t slot, Exclusion& ex) {
      mu_.assert_reader_held();
      const auto age = now_ms - slots_[slot].last_seen_ms;
      if (age < down_after_.count()) return false;
      ex.last_seen_age_ms = std::min(ex.last_seen_age_ms, age);
      return true;
    });
  }
  return out;
}

std::vector<Exclusion> HostIndex::reasons_for(const Plan& p, std::uint32_t slot, std::int64_t now_ms) const {
  std::vector<Exclusion> out;
  for (std::size_t i = 0; i < p.required.size(); ++i)
    if (p.required[i] == nullptr || !p.required[i]->test(slot))
      out.push_back({.kind = Exclusion::Kind::missing_required,
                     .trait = p.q->required[i],
                     .trait_known = p.required[i] != nullptr,
                     .hosts = 1});
  for (std::size_t i = 0; i < p.forbidden.size(); ++i)
    if (p.forbidden[i] != nullptr && p.forbidden[i]->test(slot))
      out.push_back({.kind = Exclusion::Kind::has_forbidden, .trait = p.q->forbidden[i], .hosts = 1});
  for (std::size_t g = 0; g < p.any_of.size(); ++g) {
    const auto& group = p.any_of[g];
    if (std::none_of(group.begin(), group.end(), [slot](const SlotBits* b) { return b && b->test(slot); }))
      out.push_back({.kind = Exclusion::Kind::none_of_any_of, .any_of = p.q->any_of[g], .hosts = 1});
  }
  const Slot& s = slots_[slot];
  for (auto rc : kAllResourceClasses) {
    const auto i = static_cast<std::size_t>(rc);
    const auto asked = p.q->resources[i];
    if (!asked || *asked == 0 || (s.free[i] != kNoInventory && s.free[i] >= *asked)) continue;
    Exclusion e{.kind = Exclusion::Kind::not_enough_resource, .resource = rc, .asked = *asked, .hosts = 1};
    if (s.free[i] != kNoInventory) e.free = s.free[i];
    out.push_back(std::move(e));
  }
  const auto age = now_ms - s.last_seen_ms;
  if (!p.q->include_down && age >= down_after_.count())
    out.push_back({.kind = Exclusion::Kind::down, .last_seen_age_ms = age, .hosts = 1});
  return out;
}

Result<HostExplanation> HostIndex::explain_host(const Query& q, std::string_view name,
                                                std::int64_t now_ms) const {
  ReaderLock lock(mu_);
  auto slot = find_slot(name);
  if (!slot) return make_error(Errc::not_found, "no host " + quote_for_error(name) + " in the fleet index");
  const Plan p = plan(q);
  HostExplanation out;
  out.host = match_of(*slot, now_ms);
  out.reasons = reasons_for(p, *slot, now_ms);
  out.matches = out.reasons.empty();
  out.index_generation = generation_;
  return out;
}

IndexedHost HostIndex::indexed_of(std::uint32_t slot) const {
  const Slot& s = slots_[slot];
  IndexedHost h{names_[slot], uuid_text(s.uuid), s.generation, s.last_seen_ms, {}, {}};
  slot_traits_[slot].for_each([&](std::uint32_t t) {
    mu_.assert_reader_held();
    h.traits.push_back(
        {trait_names_[t], is_custom_trait(trait_names_[t]) ? TraitOwner::operator_ : TraitOwner::agent});
  });
  std::sort(h.traits.begin(), h.traits.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (std::size_t i = 0; i < kResourceClassCount; ++i)
    if (s.free[i] != kNoInventory) h.free[i] = s.free[i];
  return h;
}

std::vector<IndexedHost> HostIndex::snapshot() const {
  ReaderLock lock(mu_);
  std::vector<IndexedHost> out;
  for (std::size_t w = 0; w < words_; ++w)
    for_each_bit(used_.data()[w], [&](unsigned bit) {
      mu_.assert_reader_held();
      out.push_back(indexed_of(static_cast<std::uint32_t>(w * 64 + bit)));
    });
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::optional<std::string> HostIndex::slot_name(std::uint32_t slot) const {
  ReaderLock lock(mu_);
  if (!used_.test(slot)) return std::nullopt;
  return names_[slot];
}

std::optional<std::int64_t> HostIndex::host_generation(std::string_view name) const {
  ReaderLock lock(mu_);
  const auto slot = find_slot(name);
  if (!slot) return std::nullopt;
  return slots_[*slot].generation;
}

bool HostIndex::holds(std::string_view name, std::int64_t generation, std::int64_t last_seen_ms) const {
  ReaderLock lock(mu_);
  const auto slot = find_slot(name);
  if (!slot) return false;
  const Slot& s = slots_[*slot];
  return s.generation > generation || (s.generation == generation && s.last_seen_ms >= last_seen_ms);
}

std::uint64_t HostIndex::generation() const {
  ReaderLock lock(mu_);
  return generation_;
}

std::size_t HostIndex::host_count() const {
  ReaderLock lock(mu_);
  return used_.count();
}

std::size_t HostIndex::trait_count() const {
  ReaderLock lock(mu_);
  return trait_ids_.size();
}

std::size_t HostIndex::memory_bytes() const {
  ReaderLock lock(mu_);
  std::size_t n = sizeof(*this) + names_.capacity() * sizeof(std::string) + slots_.capacity() * sizeof(Slot) +
                  used_.memory_bytes() + free_slots_.capacity() * sizeof(std::uint32_t) +
                  table_.capacity() * sizeof(std::uint32_t);
  for (const auto& s : names_)
    if (s.capacity() > 15) n += s.capacity() + 1;
  for (const auto& b : trait_bits_) n += b.memory_bytes();
  n += slot_traits_.capacity() * sizeof(TraitList) + free_trait_ids_.capacity() * sizeof(std::uint32_t);
  for (const auto& v : slot_traits_) n += v.memory_bytes() - sizeof(TraitList);
  for (const auto& t : trait_names_)
    n += sizeof(std::string) * 2 + 2 * (t.size() + 1) + 32;  // name + map node
  return n;
}

}  // namespace virtcap::fleet
