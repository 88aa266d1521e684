// GET /v1/instances: the query parsed (instance_list.cpp), then one page
// rendered from the store's cursor straight into the body.
#include <re2/re2.h>

#include <algorithm>

#include "api/instance_list.h"
#include "common/json_text.h"

namespace virtcap::api {

ListPageCache::Body ListPageCache::find(const std::string& key, const ContentsVersion& version) {
  MutexLock lock(mu_);
  for (auto& e : entries_)
    if (e.key == key) {
      if (e.version != version) return nullptr;
      e.used = ++clock_;
      return e.body;
    }
  return nullptr;
}

void ListPageCache::keep(std::string key, const ContentsVersion& version, Body body) {
  if (!body || body->size() > kMaxBodyBytes) return;
  MutexLock lock(mu_);
  Entry* slot = nullptr;
  for (auto& e : entries_)
    if (e.key == key) slot = &e;
  if (slot == nullptr && entries_.size() < kEntries) slot = &entries_.emplace_back();
  if (slot == nullptr)  // the least recently used page makes room
    slot = &*std::min_element(entries_.begin(), entries_.end(),
                              [](const Entry& a, const Entry& b) { return a.used < b.used; });
  *slot = Entry{std::move(key), version, std::move(body), ++clock_};
}

namespace {

// One string per parameter set: each name and value length-prefixed, so no
// two different sets share a key.
std::string cache_key(const std::map<std::string, std::string>& params) {
  std::string key;
  for (const auto& [k, v] : params)
    (((key += std::to_string(k.size())) += ':') += k) += std::to_string(v.size()) + ':' + v;
  return key;
}

}  // namespace

Result<ListPageCache::Body> list_instances_body(compute::ComputeManager& mgr,
                                                const std::map<std::string, std::string>& params,
                                                ListPageCache* cache) {
  // The version is taken before the read: a write after it makes the next
  // version differ. A kept page is looked up before the query is parsed (a
  // `name` pattern compiled): only a valid, storable query's page is ever
  // kept, so a hit needs no parse. Without `long` or `power_state` in the
  // parameters every valid query is storable.
  std::optional<ContentsVersion> version;
  std::string key;
  auto look_up = [&]() -> ListPageCache::Body {
    version = mgr.store_version();
    key = cache_key(params);
    return cache->find(key, *version);
  };
  const bool plain = cache != nullptr && !params.count("long") && !params.count("power_state");
  if (plain)
    if (auto hit = look_up()) return hit;
  auto q = parse_list_query(params);
  if (!q.ok()) return q.error();
  if (cache != nullptr && !plain && !q->long_view && !q->power_state)  // e.g. long=false
    if (auto hit = look_up()) return hit;
  // Power states come from the hypervisor, asked once per request and only
  // when wanted. Without it, a long list shows null; a power_state filter fails.
  std::optional<std::map<std::string, PowerState, std::less<>>> powers;
  if (q->long_view || q->power_state) {
    auto p = mgr.power_states();
    if (p.ok())
      powers = std::move(p.value());
    else if (q->power_state)
      return p.error();
  }
  auto power_of = [&](std::string_view uuid) -> std::optional<PowerState> {
    if (!powers) return std::nullopt;
    auto it = powers->find(uuid);
    return it == powers->end() ? std::nullopt : std::optional<PowerState>(it->second);
  };
  if (q->power_state || q->name)
    q->page.accept = [&](const InstanceRowView& r) {
      if (q->power_state && power_of(r.uuid).value_or(PowerState::nostate) != *q->power_state) return false;
      return !q->name || re2::RE2::PartialMatch(re2::StringPiece(r.name.data(), r.name.size()), *q->name);
    };
  std::string out;
  out.reserve(256 * q->page.limit + 256);
  out += "{\"instances\":[";
  auto info = mgr.list_page(q->page, [&](const InstanceRowView& r) {
    if (out.back() != '[') out += ',';
    if (!q->long_view) return append_instance_json(out, r);
    const auto ps = power_of(r.uuid);
    append_instance_json(out, r, ps ? to_string(*ps) : std::string_view());
  });
  if (!info.ok()) return info.error();
  out += "],\"next\":";
  if (info->more) {
    auto next = params;
    next["marker"] = info->next_marker;
    ((out += '"') += instances_path(next)) += '"';  // percent-encoded: nothing to escape
  } else {
    out += "null";
  }
  out += "}\n";
  auto body = std::make_shared<const std::string>(std::move(out));
  if (version) cache->keep(std::move(key), *version, body);
  return body;
}

}  // namespace virtcap::api
