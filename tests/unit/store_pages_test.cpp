// Paged, streamed instance lists (InstanceStore::visit_instances) on both
// stores: the SQLite store's statement-stepping override and the default
// (the memory store) must page identically, Nova-style (limit + marker).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "store/memory/memory_store.h"
#include "store/sqlite/sqlite_store.h"
#include "support/test_support.h"

namespace virtcap::store {
namespace {

using testing::TempDir;

std::string uuid_of(int i) {
  char buf[37];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

InstanceRecord record(int i, const std::string& host, std::int64_t created_at) {
  InstanceRecord r;
  r.uuid = uuid_of(i);
  r.name = "vm-" + std::to_string(i);
  r.host = host;
  r.image_id = "img-" + std::to_string(i % 7);
  r.memory_mb = 64 + i;
  r.vcpus = 1 + i % 4;
  r.vm_state = VmState::active;
  r.created_at = created_at;
  r.updated_at = created_at + 1;
  return r;
}

InstanceRecord copy_of(const InstanceRowView& v) {
  InstanceRecord r;
  r.uuid = v.uuid;
  r.name = v.name;
  r.host = v.host;
  r.image_id = v.image_id;
  r.memory_mb = v.memory_mb;
  r.vcpus = v.vcpus;
  r.vm_state = v.vm_state;
  r.task_state = v.task_state;
  r.created_at = v.created_at;
  r.updated_at = v.updated_at;
  r.deleted_at = v.deleted_at;
  return r;
}

bool same(const InstanceRecord& a, const InstanceRecord& b) {
  return a.uuid == b.uuid && a.name == b.name && a.host == b.host && a.image_id == b.image_id &&
         a.memory_mb == b.memory_mb && a.vcpus == b.vcpus && a.vm_state == b.vm_state &&
         a.task_state == b.task_state && a.created_at == b.created_at && a.updated_at == b.updated_at &&
         a.deleted_at == b.deleted_at;
}

template <class S>
struct Made;
template <>
struct Made<MemoryStore> {
  TempDir dir;
  std::unique_ptr<InstanceStore> store = std::make_unique<MemoryStore>();
};
template <>
struct Made<SqliteStore> {
  TempDir dir{"virtcap-pages"};
  std::unique_ptr<InstanceStore> store = [this] {
    auto s = SqliteStore::open(dir.sub("virtcap.db"));
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return std::unique_ptr<InstanceStore>(std::move(s.value()));
  }();
};

template <class S>
class InstancePages : public ::testing::Test {
 protected:
  Made<S> made;
  InstanceStore& store() { return *made.store; }

  // n instances on host "a" (created_at with ties: i / 3), a few on "b",
  // every 5th of "a" deleted.
  void fill(int n) {
    for (int i = 0; i < n; ++i) {
      auto r = record(i, "a", i / 3);
      if (i % 5 == 4) {
        r.vm_state = VmState::deleted;
        r.deleted_at = 99;
        r.name += "-gone";
      }
      ASSERT_TRUE(store().create_instance(r).ok());
    }
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(store().create_instance(record(100000 + i, "b", 0)).ok());
  }

  // Walks every page; returns the instances in visiting order.
  std::vector<InstanceRecord> walk(std::size_t limit, bool include_deleted, int* pages = nullptr) {
    std::vector<InstanceRecord> out;
    InstancePageQuery q{"a", include_deleted, limit, ""};
    for (int page = 0;; ++page) {
      std::size_t before = out.size();
      auto info = store().visit_instances(q, [&](const InstanceRowView& v) { out.push_back(copy_of(v)); });
      EXPECT_TRUE(info.ok()) << info.error().message;
      if (!info.ok() || page > 10000) break;
      EXPECT_EQ(info->rows, out.size() - before);
      EXPECT_LE(info->rows, limit);
      if (pages) *pages = page + 1;
      if (!info->more) {
        EXPECT_EQ(info->next_marker, "");
        break;
      }
      EXPECT_EQ(info->rows, limit) << "a page before the last is full";
      EXPECT_EQ(info->next_marker, out.back().uuid);
      q.marker = info->next_marker;
    }
    return out;
  }
};

using Stores = ::testing::Types<MemoryStore, SqliteStore>;
TYPED_TEST_SUITE(InstancePages, Stores);

TYPED_TEST(InstancePages, PagesConcatenateToTheFullListInOrder) {
  this->fill(2345);
  for (bool deleted : {false, true}) {
    auto all = this->store().list_instances("a", deleted);
    ASSERT_TRUE(all.ok());
    for (std::size_t limit : {std::size_t{1000}, std::size_t{250}, std::size_t{7}}) {
      SCOPED_TRACE("limit " + std::to_string(limit) + (deleted ? " with deleted" : ""));
      int pages = 0;
      auto got = this->walk(limit, deleted, &pages);
      ASSERT_EQ(got.size(), all->size());
      for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_TRUE(same(got[i], (*all)[i])) << i << " " << got[i].uuid;
      EXPECT_EQ(pages, static_cast<int>((all->size() + limit - 1) / limit));
    }
  }
}

TYPED_TEST(InstancePages, ExactlyFullLastPageSaysNoMore) {
  this->fill(0);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(this->store().create_instance(record(i, "a", i)).ok());
  std::vector<std::string> seen;
  auto first = this->store().visit_instances({"a", false, 5, ""},
                                             [&](const InstanceRowView& v) { seen.emplace_back(v.uuid); });
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->more);
  auto second = this->store().visit_instances({"a", false, 5, first->next_marker},
                                              [&](const InstanceRowView& v) { seen.emplace_back(v.uuid); });
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->more) << "ten instances, two pages of five: no third page";
  EXPECT_EQ(second->rows, 5u);
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 10u);
  // A page after the last instance is empty, not an error.
  auto after =
      this->store().visit_instances({"a", false, 5, uuid_of(9)}, [&](const InstanceRowView&) { FAIL(); });
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->rows, 0u);
  EXPECT_FALSE(after->more);
  // An empty host: no rows, no more.
  auto none =
      this->store().visit_instances({"nobody", false, 5, ""}, [&](const InstanceRowView&) { FAIL(); });
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->rows, 0u);
}

TYPED_TEST(InstancePages, MarkersOfDeletedInstancesWorkOthersAreClearErrors) {
  this->fill(20);
  // uuid_of(4) is deleted: as a marker it still places the page.
  std::vector<std::string> seen;
  auto page = this->store().visit_instances({"a", false, 3, uuid_of(4)},
                                            [&](const InstanceRowView& v) { seen.emplace_back(v.uuid); });
  ASSERT_TRUE(page.ok()) << page.error().message;
  EXPECT_EQ(seen, (std::vector<std::string>{uuid_of(5), uuid_of(6), uuid_of(7)}));
  for (const std::string& bad : {uuid_of(100000) /* host b */, std::string("no-such-uuid")}) {
    auto r = this->store().visit_instances({"a", false, 3, bad}, [&](const InstanceRowView&) { FAIL(); });
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_NE(r.error().message.find("marker '" + bad + "'"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("host a"), std::string::npos) << r.error().message;
  }
  auto big = this->store().visit_instances({"a", false, kMaxInstancePage + 1, ""},
                                           [&](const InstanceRowView&) { FAIL(); });
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::invalid_argument);
  EXPECT_NE(big.error().message.find("1000"), std::string::npos) << big.error().message;
  // limit 0: nothing visited; more says whether anything follows the marker.
  auto zero =
      this->store().visit_instances({"a", false, 0, uuid_of(5)}, [&](const InstanceRowView&) { FAIL(); });
  ASSERT_TRUE(zero.ok());
  EXPECT_TRUE(zero->more);
  EXPECT_EQ(zero->next_marker, uuid_of(5));
}

// Keyset paging: instances created or deleted between two pages neither
// repeat nor hide the instances that were there all along.
TYPED_TEST(InstancePages, ChangesBetweenPagesNeverRepeatOrSkipOldInstances) {
  this->fill(0);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(this->store().create_instance(record(i, "a", 10 + i)).ok());
  std::vector<std::string> seen;
  auto visit = [&](const InstanceRowView& v) { seen.emplace_back(v.uuid); };
  auto p1 = this->store().visit_instances({"a", false, 10, ""}, visit);
  ASSERT_TRUE(p1.ok());
  // Meanwhile: one older instance appears (before the marker), the next one
  // after the marker is deleted, a newer one appears.
  ASSERT_TRUE(this->store().create_instance(record(500, "a", 0)).ok());
  auto gone = record(10, "a", 20);
  gone.deleted_at = 1;
  gone.vm_state = VmState::deleted;
  ASSERT_TRUE(this->store().update_instance(gone).ok());
  ASSERT_TRUE(this->store().create_instance(record(501, "a", 1000)).ok());
  InstancePageQuery q{"a", false, 10, p1->next_marker};
  for (;;) {
    auto p = this->store().visit_instances(q, visit);
    ASSERT_TRUE(p.ok());
    if (!p->more) break;
    q.marker = p->next_marker;
  }
  std::vector<std::string> want;
  for (int i = 0; i < 30; ++i)
    if (i != 10) want.push_back(uuid_of(i));
  want.push_back(uuid_of(501));
  EXPECT_EQ(seen, want);
}

// contents_version moves with every kind of write, and only with writes: a
// page rendered at one version is reused by the API only while it holds.
TYPED_TEST(InstancePages, ContentsVersionMovesWithEveryWriteAndOnlyThen) {
  auto version = [&] {
    auto v = this->store().contents_version();
    EXPECT_TRUE(v.has_value());
    return v.value_or(ContentsVersion{});
  };
  const ContentsVersion v0 = version();
  // Reads do not move it.
  (void)this->store().visit_instances({"a", true, 10, ""}, [](const InstanceRowView&) {});
  (void)this->store().list_instances("a", true);
  (void)this->store().get_instance(record(1, "a", 1).uuid);
  EXPECT_EQ(version(), v0);
  auto r = record(1, "a", 1);
  ASSERT_TRUE(this->store().create_instance(r).ok());
  const ContentsVersion v1 = version();
  EXPECT_NE(v1, v0) << "create";
  r.vm_state = VmState::error;
  ASSERT_TRUE(this->store().update_instance(r).ok());
  const ContentsVersion v2 = version();
  EXPECT_NE(v2, v1) << "update";
  ASSERT_TRUE(this->store().register_host({"a", "/var/lib/virtcap/instances"}).ok());
  EXPECT_NE(version(), v2) << "register_host";
  // A refused write changes nothing, and need not move it; it never goes back.
  const ContentsVersion v3 = version();
  EXPECT_FALSE(this->store().create_instance(r).ok());
  EXPECT_EQ(version(), v3);
}

// The SQLite file may be written by another connection (another process): its
// commits move the version too.
TEST(SqliteContentsVersion, ACommitByAnotherConnectionMovesIt) {
  TempDir dir{"virtcap-version"};
  auto a = SqliteStore::open(dir.sub("virtcap.db"));
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = SqliteStore::open(dir.sub("virtcap.db"));
  ASSERT_TRUE(b.ok()) << b.error().message;
  const auto before = a.value()->contents_version();
  ASSERT_TRUE(before.has_value());
  ASSERT_TRUE(b.value()->create_instance(record(7, "a", 1)).ok());
  const auto after = a.value()->contents_version();
  ASSERT_TRUE(after.has_value());
  EXPECT_NE(*after, *before);
  EXPECT_EQ(after->own_writes, before->own_writes) << "a itself wrote nothing";
}

// The views carry exactly what get_instance returns, including text that is
// not plain ASCII and empty fields.
TYPED_TEST(InstancePages, ViewsCarryEveryField) {
  auto r = record(1, "a", 5);
  r.name = std::string("caf\xc3\xa9 \"quoted\" \\ ") + std::string(1, '\x01');
  r.task_state = TaskState::none;
  r.image_id = std::string(300, 'i');
  r.deleted_at = 0;
  ASSERT_TRUE(this->store().create_instance(r).ok());
  std::vector<InstanceRecord> got;
  auto p = this->store().visit_instances({"a", true, 10, ""},
                                         [&](const InstanceRowView& v) { got.push_back(copy_of(v)); });
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(got.size(), 1u);
  auto stored = this->store().get_instance(r.uuid);
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(same(got[0], *stored));
  EXPECT_TRUE(same(got[0], r));
}

// Filters and sort orders: on both stores, walking every page of every
// (sort key, direction, vm_state, row filter) gives exactly what sorting and
// filtering all records in the test gives - the two stores cannot differ.
TYPED_TEST(InstancePages, FiltersAndSortOrdersMatchAReferenceOnBothStores) {
  std::mt19937 rng(12345);
  const VmState states[] = {VmState::active, VmState::error, VmState::lost, VmState::building};
  std::vector<InstanceRecord> all;
  for (int i = 0; i < 300; ++i) {
    auto r = record(i, "a", static_cast<std::int64_t>(rng() % 20));  // many ties
    r.name = std::string(1, static_cast<char>('a' + rng() % 5)) + std::to_string(rng() % 40);
    r.updated_at = static_cast<std::int64_t>(rng() % 50);
    r.memory_mb = 64 << (rng() % 4);
    r.vcpus = 1 + static_cast<int>(rng() % 3);
    r.vm_state = states[rng() % 4];
    if (rng() % 6 == 0) {
      r.vm_state = VmState::deleted;
      r.deleted_at = 7;
    }
    if (r.deleted_at == 0 && std::any_of(all.begin(), all.end(), [&](const InstanceRecord& o) {
          return o.deleted_at == 0 && o.name == r.name;
        }))
      r.name += "-" + std::to_string(i);  // live names are unique per host
    ASSERT_TRUE(this->store().create_instance(r).ok()) << r.name;
    all.push_back(r);
  }
  ASSERT_TRUE(this->store().create_instance(record(9999, "b", 0)).ok());
  auto key_of = [](const InstanceRecord& r, InstanceSortKey k) -> std::pair<std::int64_t, std::string> {
    switch (k) {
      case InstanceSortKey::created_at: return {r.created_at, ""};
      case InstanceSortKey::updated_at: return {r.updated_at, ""};
      case InstanceSortKey::name: return {0, r.name};
      case InstanceSortKey::vm_state: return {0, std::string(to_string(r.vm_state))};
      case InstanceSortKey::memory_mb: return {r.memory_mb, ""};
      case InstanceSortKey::vcpus: return {r.vcpus, ""};
      case InstanceSortKey::uuid: return {0, ""};
    }
    return {};
  };
  for (const auto& key_name : {"created_at", "updated_at", "name", "vm_state", "memory_mb", "vcpus", "uuid"})
    for (bool desc : {false, true})
      for (const std::optional<VmState> vm_state :
           {std::optional<VmState>(), std::optional(VmState::error), std::optional(VmState::deleted)})
        for (bool odd_memory_only : {false, true}) {
          const InstanceSortKey key = parse_sort_key(key_name).value();
          EXPECT_EQ(to_string(key), key_name);
          SCOPED_TRACE(std::string(key_name) + (desc ? " desc " : " asc ") +
                       std::string(vm_state ? to_string(*vm_state) : "") +
                       (odd_memory_only ? " accept" : ""));
          std::vector<InstanceRecord> want;
          for (const auto& r : all)
            if ((r.deleted_at == 0 || vm_state == VmState::deleted) &&
                (!vm_state || r.vm_state == *vm_state) && (!odd_memory_only || r.memory_mb % 128 == 64))
              want.push_back(r);
          std::sort(want.begin(), want.end(), [&](const InstanceRecord& x, const InstanceRecord& y) {
            auto a = std::make_tuple(key_of(x, key), x.uuid), b = std::make_tuple(key_of(y, key), y.uuid);
            return desc ? b < a : a < b;
          });
          std::vector<std::string> got;
          InstancePageQuery q{"a", vm_state == VmState::deleted, 17, ""};
          q.vm_state = vm_state;
          q.sort_key = key;
          q.descending = desc;
          if (odd_memory_only) q.accept = [](const InstanceRowView& v) { return v.memory_mb % 128 == 64; };
          for (int page = 0; page < 100; ++page) {
            auto info =
                this->store().visit_instances(q, [&](const InstanceRowView& v) { got.emplace_back(v.uuid); });
            ASSERT_TRUE(info.ok()) << info.error().message;
            if (!info->more) break;
            EXPECT_EQ(info->rows, 17u);
            q.marker = info->next_marker;
          }
          std::vector<std::string> want_uuids;
          for (const auto& r : want) want_uuids.push_back(r.uuid);
          EXPECT_EQ(got, want_uuids);
        }
  EXPECT_FALSE(parse_sort_key("host").has_value());
  EXPECT_FALSE(parse_sort_key("name; DROP TABLE instances").has_value());
}

}  // namespace
}  // namespace virtcap::store
