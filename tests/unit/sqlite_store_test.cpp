// SqliteStore against real SQLite files in a fresh temporary directory.
#include "store/sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <latch>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace virtcap::store {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// A mkdtemp directory, removed with everything in it at the end.
struct TempDir : virtcap::testing::TempDir {
  TempDir() : virtcap::testing::TempDir("virtcap-sqlite") {}
  std::string file(const std::string& name) const { return sub(name); }
};

// A second, raw connection to the same file: what another process sees.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    rc_ = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  int exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
  std::string errmsg() const { return sqlite3_errmsg(db_); }
  // The first column of the first row, as text ("" if none).
  std::string query(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      const unsigned char* p = sqlite3_column_text(st, 0);
      if (p != nullptr) out = reinterpret_cast<const char*>(p);
    }
    sqlite3_finalize(st);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::set<std::string> dir_entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

InstanceRecord rec(const std::string& uuid, const std::string& name, const std::string& host,
                   std::int64_t created_at = 100) {
  InstanceRecord r;
  r.uuid = uuid;
  r.name = name;
  r.host = host;
  r.image_id = "img-" + name;
  r.memory_mb = 512;
  r.vcpus = 1;
  r.created_at = created_at;
  r.updated_at = created_at;
  return r;
}

std::unique_ptr<SqliteStore> open_ok(const std::string& path) {
  auto s = SqliteStore::open(path);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().describe());
  if (!s.ok()) return nullptr;
  return std::move(s.value());
}

std::vector<std::string> uuids(const std::vector<InstanceRecord>& v) {
  std::vector<std::string> out;
  for (const auto& r : v) out.push_back(r.uuid);
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Builds a closed virtcap store at `path` with `n` instances.
void make_store(const std::string& path, int n) {
  auto s = open_ok(path);
  ASSERT_TRUE(s);
  for (int i = 0; i < n; ++i) {
    auto r = rec("uuid-" + std::to_string(i), "vm-" + std::to_string(i), "host-a", i);
    r.image_id = std::string(200, 'x');  // spread the rows over many pages
    ASSERT_TRUE(s->create_instance(r).ok());
  }
}

TEST(SqliteStore, OpenCreatesTheMissingParentDirectoriesWithMode0700) {
  TempDir dir;
  const std::string path = dir.file("state/store/virtcap.db");
  auto s = open_ok(path);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path(), path);
  EXPECT_TRUE(fs::exists(path));
  for (const auto* sub : {"state", "state/store"}) {
    struct stat st {};
    ASSERT_EQ(::stat(dir.file(sub).c_str(), &st), 0) << sub;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << sub;
  }
  struct stat db {};
  ASSERT_EQ(::stat(path.c_str(), &db), 0);
  EXPECT_EQ(db.st_mode & 0777, 0600u) << "a new database is owner-only";
}

TEST(SqliteStore, OpenRejectsAnEmptyPathAndAParentThatIsAFile) {
  TempDir dir;
  auto empty = SqliteStore::open("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code, Errc::invalid_argument);

  write_bytes(dir.file("plain"), "x");
  auto under_file = SqliteStore::open(dir.file("plain/virtcap.db"));
  ASSERT_FALSE(under_file.ok());
  EXPECT_EQ(under_file.error().code, Errc::io_error);
  EXPECT_TRUE(contains(under_file.error().message, dir.file("plain"))) << under_file.error().message;
}

TEST(SqliteStore, CreateGetUpdateRoundTripEveryField) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  InstanceRecord r = rec("u-1", "web", "host-a", 1700000000);
  r.memory_mb = 2048;
  r.vcpus = 4;
  r.vm_state = VmState::active;
  r.task_state = TaskState::spawning;
  r.updated_at = 1700000001;
  r.name = "it's \"quoted\"; DROP TABLE instances; --";  // a value is never SQL
  ASSERT_TRUE(s->create_instance(r).ok());

  auto got = s->get_instance("u-1");
  ASSERT_TRUE(got.ok()) << got.error().describe();
  EXPECT_EQ(got->uuid, r.uuid);
  EXPECT_EQ(got->name, r.name);
  EXPECT_EQ(got->host, r.host);
  EXPECT_EQ(got->image_id, r.image_id);
  EXPECT_EQ(got->memory_mb, 2048);
  EXPECT_EQ(got->vcpus, 4);
  EXPECT_EQ(got->vm_state, VmState::active);
  EXPECT_EQ(got->task_state, TaskState::spawning);
  EXPECT_EQ(got->created_at, 1700000000);
  EXPECT_EQ(got->updated_at, 1700000001);
  EXPECT_EQ(got->deleted_at, 0);

  r.name = "web-2";
  r.host = "host-b";
  r.image_id = "img-new";
  r.memory_mb = 4096;
  r.vcpus = 8;
  r.vm_state = VmState::deleted;
  r.task_state = TaskState::none;
  r.updated_at = 1700000100;
  r.deleted_at = 1700000100;
  ASSERT_TRUE(s->update_instance(r).ok());
  got = s->get_instance("u-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->name, "web-2");
  EXPECT_EQ(got->host, "host-b");
  EXPECT_EQ(got->image_id, "img-new");
  EXPECT_EQ(got->memory_mb, 4096);
  EXPECT_EQ(got->vcpus, 8);
  EXPECT_EQ(got->vm_state, VmState::deleted);
  EXPECT_EQ(got->task_state, TaskState::none);
  EXPECT_EQ(got->updated_at, 1700000100);
  EXPECT_EQ(got->deleted_at, 1700000100);  // deleted instances are still found
}

TEST(SqliteStore, GetAndUpdateOfAnUnknownUuidAreNotFound) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  auto got = s->get_instance("nope");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, Errc::not_found);
  EXPECT_TRUE(contains(got.error().message, "nope"));
  auto up = s->update_instance(rec("nope", "x", "host-a"));
  ASSERT_FALSE(up.ok());
  EXPECT_EQ(up.error().code, Errc::not_found);
  auto all = s->list_instances("host-a", true);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());  // the failed update created nothing
}

TEST(SqliteStore, ListInstancesIsOldestFirstAndShowsDeletedOnlyIfAsked) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->create_instance(rec("u-c", "c", "host-a", 300)).ok());
  ASSERT_TRUE(s->create_instance(rec("u-a", "a", "host-a", 100)).ok());
  ASSERT_TRUE(s->create_instance(rec("u-b2", "b2", "host-a", 200)).ok());
  ASSERT_TRUE(s->create_instance(rec("u-b1", "b1", "host-a", 200)).ok());  // same second: by uuid
  ASSERT_TRUE(s->create_instance(rec("u-other", "a", "host-b", 50)).ok());
  auto gone = rec("u-d", "d", "host-a", 150);
  gone.deleted_at = 400;
  gone.vm_state = VmState::deleted;
  ASSERT_TRUE(s->create_instance(gone).ok());

  auto live = s->list_instances("host-a", false);
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(uuids(*live), (std::vector<std::string>{"u-a", "u-b1", "u-b2", "u-c"}));
  auto all = s->list_instances("host-a", true);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(uuids(*all), (std::vector<std::string>{"u-a", "u-d", "u-b1", "u-b2", "u-c"}));
  auto none = s->list_instances("host-z", true);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(SqliteStore, DuplicateUuidIsAlreadyExists) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->create_instance(rec("u-1", "web", "host-a")).ok());
  auto dup = s->create_instance(rec("u-1", "db", "host-b"));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, Errc::already_exists);
  EXPECT_TRUE(contains(dup.error().message, "instance u-1 is already in the store")) << dup.error().message;
  auto got = s->get_instance("u-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->name, "web");  // the first record is untouched
}

TEST(SqliteStore, DuplicateLiveNameOnOneHostIsAlreadyExists_OtherHostOrAfterDeletionIsFine) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->create_instance(rec("u-1", "web", "host-a")).ok());

  auto dup = s->create_instance(rec("u-2", "web", "host-a"));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, Errc::already_exists);
  EXPECT_TRUE(contains(dup.error().message, "'web'")) << dup.error().message;
  EXPECT_TRUE(contains(dup.error().message, "host-a")) << dup.error().message;
  EXPECT_TRUE(contains(dup.error().message, "u-1")) << dup.error().message;  // who holds the name
  EXPECT_EQ(s->get_instance("u-2").error().code, Errc::not_found);

  EXPECT_TRUE(s->create_instance(rec("u-3", "web", "host-b")).ok()) << "same name, other host";

  auto first = s->get_instance("u-1");
  ASSERT_TRUE(first.ok());
  first->deleted_at = 500;
  first->vm_state = VmState::deleted;
  ASSERT_TRUE(s->update_instance(*first).ok());
  EXPECT_TRUE(s->create_instance(rec("u-4", "web", "host-a")).ok()) << "the name is free once deleted";

  // Bringing the deleted one back to life would make two live 'web's.
  first->deleted_at = 0;
  auto revive = s->update_instance(*first);
  ASSERT_FALSE(revive.ok());
  EXPECT_EQ(revive.error().code, Errc::already_exists);
  EXPECT_TRUE(contains(revive.error().message, "u-4")) << revive.error().message;
  EXPECT_EQ(s->get_instance("u-1")->deleted_at, 500);
}

TEST(SqliteStore, HostsSharingAndLiveInstancesOnAcrossThreeHostsAndTwoPaths) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->register_host({"host-c", "/shared/nfs", 10}).ok());
  ASSERT_TRUE(s->register_host({"host-a", "/shared/nfs", 11}).ok());
  ASSERT_TRUE(s->register_host({"host-b", "/var/lib/virtcap/instances", 12}).ok());

  auto shared = s->hosts_sharing("/shared/nfs");
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ(*shared, (std::vector<std::string>{"host-a", "host-c"}));
  auto local = s->hosts_sharing("/var/lib/virtcap/instances");
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(*local, (std::vector<std::string>{"host-b"}));
  auto nobody = s->hosts_sharing("/elsewhere");
  ASSERT_TRUE(nobody.ok());
  EXPECT_TRUE(nobody->empty());

  ASSERT_TRUE(s->create_instance(rec("u-a1", "a1", "host-a")).ok());
  ASSERT_TRUE(s->create_instance(rec("u-a2", "a2", "host-a")).ok());
  ASSERT_TRUE(s->create_instance(rec("u-b1", "b1", "host-b")).ok());
  ASSERT_TRUE(s->create_instance(rec("u-c1", "c1", "host-c")).ok());
  auto dead = rec("u-c2", "c2", "host-c");
  dead.deleted_at = 99;
  ASSERT_TRUE(s->create_instance(dead).ok());

  auto on_shared = s->live_instances_on(*shared);
  ASSERT_TRUE(on_shared.ok());
  EXPECT_EQ(uuids(*on_shared), (std::vector<std::string>{"u-a1", "u-a2", "u-c1"}));
  auto on_b = s->live_instances_on({"host-b", "host-b"});
  ASSERT_TRUE(on_b.ok());
  EXPECT_EQ(uuids(*on_b), (std::vector<std::string>{"u-b1"}));
  auto on_none = s->live_instances_on({});
  ASSERT_TRUE(on_none.ok());
  EXPECT_TRUE(on_none->empty());

  // Re-registering moves a host to another path.
  ASSERT_TRUE(s->register_host({"host-b", "/shared/nfs", 20}).ok());
  shared = s->hosts_sharing("/shared/nfs");
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ(*shared, (std::vector<std::string>{"host-a", "host-b", "host-c"}));
  auto hosts = s->list_hosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[1].host, "host-b");
  EXPECT_EQ((*hosts)[1].instances_path, "/shared/nfs");
  EXPECT_EQ((*hosts)[1].updated_at, 20);
}

TEST(SqliteStore, EverythingSurvivesCloseAndReopen) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  {
    auto s = open_ok(path);
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->register_host({"host-a", "/srv/instances", 7}).ok());
    ASSERT_TRUE(s->create_instance(rec("u-1", "web", "host-a", 1)).ok());
    auto r = rec("u-2", "db", "host-a", 2);
    r.vm_state = VmState::active;
    ASSERT_TRUE(s->create_instance(r).ok());
  }
  auto s = open_ok(path);
  ASSERT_TRUE(s);
  auto all = s->list_instances("host-a", true);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(uuids(*all), (std::vector<std::string>{"u-1", "u-2"}));
  EXPECT_EQ((*all)[1].vm_state, VmState::active);
  auto hosts = s->list_hosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].instances_path, "/srv/instances");
  EXPECT_EQ((*hosts)[0].updated_at, 7);
  // The uniqueness rules are still enforced after reopening.
  EXPECT_EQ(s->create_instance(rec("u-3", "web", "host-a")).error().code, Errc::already_exists);
}

TEST(SqliteStore, WalModeIsOnAsASecondConnectionSeesIt) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  auto s = open_ok(path);
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->create_instance(rec("u-1", "web", "host-a")).ok());
  RawDb raw(path);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw.query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.query("SELECT name FROM instances WHERE uuid = 'u-1'"), "web");  // committed, visible
  EXPECT_TRUE(fs::exists(path + "-wal"));
}

TEST(SqliteStore, StatesAreStoredByNameAndAnUnknownNameIsAStoreError) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  auto s = open_ok(path);
  ASSERT_TRUE(s);
  auto r = rec("u-1", "web", "host-a");
  r.vm_state = VmState::lost;
  r.task_state = TaskState::deleting;
  ASSERT_TRUE(s->create_instance(r).ok());
  RawDb raw(path);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw.query("SELECT vm_state || '/' || task_state FROM instances WHERE uuid = 'u-1'"),
            "lost/deleting");
  // "rebooting" was documented once and never written: it is not a state.
  ASSERT_EQ(raw.exec("UPDATE instances SET task_state = 'rebooting' WHERE uuid = 'u-1'"), SQLITE_OK);
  auto got = s->get_instance("u-1");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, Errc::store_error);
  EXPECT_TRUE(contains(got.error().message, "u-1")) << got.error().message;
  EXPECT_TRUE(contains(got.error().message, "rebooting")) << got.error().message;
  auto listed = s->list_instances("host-a", false);
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.error().code, Errc::store_error);
  InstancePageQuery q;
  q.host = "host-a";
  auto page = s->visit_instances(q, [](const InstanceRowView&) {});
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.error().code, Errc::store_error);
}

TEST(SqliteStore, SchemaIsAtTheLatestMigrationWithItsTablesAndIndexes) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  ASSERT_TRUE(open_ok(path));
  EXPECT_GE(SqliteStore::latest_schema_version(), 1);
  RawDb raw(path);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(SqliteStore::latest_schema_version()));
  EXPECT_EQ(raw.query("PRAGMA application_id"), std::to_string(SqliteStore::kApplicationId));
  for (const auto* table : {"instances", "hosts"})
    EXPECT_EQ(raw.query(std::string("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '") +
                        table + "'"),
              "1")
        << table;
  EXPECT_EQ(raw.query("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'instances' "
                      "AND sql LIKE '%(host)%'"),
            "1");
  EXPECT_EQ(raw.query("SELECT sql FROM sqlite_master WHERE name = 'instances_live_name'"),
            "CREATE UNIQUE INDEX instances_live_name ON instances (host, name) WHERE deleted_at = 0");
  // Reopening an up-to-date store applies nothing and keeps the version.
  ASSERT_TRUE(open_ok(path));
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(SqliteStore::latest_schema_version()));
}

TEST(SqliteStore, ANewerSchemaVersionIsRefusedAndTheFileIsLeftByteForByteUnchanged) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  make_store(path, 3);
  const int future = SqliteStore::latest_schema_version() + 1;
  {
    RawDb raw(path);
    ASSERT_TRUE(raw.ok());
    ASSERT_EQ(raw.exec("PRAGMA user_version = " + std::to_string(future)), SQLITE_OK) << raw.errmsg();
  }
  const std::string before = read_bytes(path);
  ASSERT_FALSE(before.empty());

  auto s = SqliteStore::open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::store_error);
  const std::string& msg = s.error().message;
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "schema version " + std::to_string(future))) << msg;
  EXPECT_TRUE(contains(msg, "newer")) << msg;
  EXPECT_EQ(read_bytes(path), before);

  RawDb raw(path);
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(future));  // never downgraded
}

TEST(SqliteStore, AGarbageFileIsRefusedAndLeftUnchanged) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  std::string garbage;
  for (int i = 0; i < 64 * 1024; ++i) garbage.push_back(static_cast<char>((i * 7919 + 13) % 251));
  write_bytes(path, garbage);

  auto s = SqliteStore::open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::store_error);
  const std::string& msg = s.error().message;
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "not a valid virtcap database")) << msg;
  EXPECT_TRUE(contains(msg, "backup")) << msg;
  EXPECT_TRUE(contains(msg, "move it aside")) << msg;
  EXPECT_EQ(read_bytes(path), garbage);
  EXPECT_EQ(dir_entries(dir.path()), (std::set<std::string>{"virtcap.db"}));  // no -wal/-shm/-journal left
}

TEST(SqliteStore, ATruncatedDatabaseIsRefusedAndLeftUnchanged) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  make_store(path, 400);
  const std::string full = read_bytes(path);
  ASSERT_GT(full.size(), 16u * 4096u);
  const std::string truncated = full.substr(0, full.size() / 2);
  write_bytes(path, truncated);

  auto s = SqliteStore::open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::store_error);
  EXPECT_TRUE(contains(s.error().message, path)) << s.error().message;
  EXPECT_TRUE(contains(s.error().message, "not a valid virtcap database")) << s.error().message;
  EXPECT_EQ(read_bytes(path), truncated);
}

// A database that opens cleanly - header, schema, application_id and
// user_version all fine, every query works - but whose free-list trunk
// pointer in the header is zeroed: only PRAGMA quick_check sees that the
// free pages are lost ("freelist: size is 0 but should be N"). It must be
// refused on quick_check's report alone, and left byte for byte.
TEST(SqliteStore, ADatabaseOnlyQuickCheckFindsCorruptIsRefusedAndLeftUnchanged) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  make_store(path, 400);
  {
    RawDb raw(path);
    ASSERT_TRUE(raw.ok());
    ASSERT_EQ(raw.exec("DELETE FROM instances; PRAGMA wal_checkpoint(TRUNCATE);"), SQLITE_OK) << raw.errmsg();
  }
  std::string bytes = read_bytes(path);
  ASSERT_GT(bytes.size(), 100u);
  const auto be32 = [&](std::size_t at) {
    return (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at])) << 24) |
           (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 1])) << 16) |
           (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 2])) << 8) |
           static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 3]));
  };
  ASSERT_NE(be32(32), 0u) << "the deleted rows left a free-list trunk page";
  ASSERT_GT(be32(36), 0u) << "free pages";
  bytes.replace(32, 4, std::string(4, '\0'));  // first free-list trunk page: none
  write_bytes(path, bytes);
  {
    // The premise: SQLite opens and reads it, and only quick_check objects.
    RawDb raw(path);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw.query("PRAGMA application_id"), std::to_string(SqliteStore::kApplicationId));
    EXPECT_EQ(raw.query("SELECT count(*) FROM instances"), "0");
    EXPECT_NE(raw.query("PRAGMA quick_check"), "ok");
    EXPECT_NE(raw.query("PRAGMA quick_check"), "");
  }
  bytes = read_bytes(path);
  ASSERT_EQ(bytes.substr(32, 4), std::string(4, '\0'));
  EXPECT_EQ(dir_entries(dir.path()), (std::set<std::string>{"virtcap.db"}));

  auto s = SqliteStore::open(path);
  ASSERT_FALSE(s.ok()) << "quick_check reported problems; the store must not open it";
  EXPECT_EQ(s.error().code, Errc::store_error);
  const std::string& msg = s.error().message;
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "not a valid virtcap database")) << msg;
  EXPECT_TRUE(contains(msg, "quick_check")) << msg;
  EXPECT_TRUE(contains(msg, "freelist")) << msg;
  EXPECT_EQ(read_bytes(path), bytes);
  EXPECT_EQ(dir_entries(dir.path()), (std::set<std::string>{"virtcap.db"}));
}

TEST(SqliteStore, AnotherApplicationsDatabaseIsRefusedAndLeftUnchanged) {
  TempDir dir;
  const std::string path = dir.file("other.db");
  {
    RawDb raw(path);
    ASSERT_TRUE(raw.ok());
    ASSERT_EQ(raw.exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); "
                       "INSERT INTO accounts (owner) VALUES ('alice');"),
              SQLITE_OK);
  }
  const std::string before = read_bytes(path);
  auto s = SqliteStore::open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::store_error);
  EXPECT_TRUE(contains(s.error().message, "not a valid virtcap database")) << s.error().message;
  EXPECT_EQ(read_bytes(path), before);
}

TEST(SqliteStore, ADatabaseLockedByAnotherConnectionGivesAClearErrorWithinTheBusyTimeout) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  make_store(path, 1);
  RawDb holder(path);
  ASSERT_TRUE(holder.ok());
  ASSERT_EQ(holder.exec("BEGIN EXCLUSIVE"), SQLITE_OK) << holder.errmsg();

  const auto start = std::chrono::steady_clock::now();
  auto s = SqliteStore::open(path, milliseconds(100));
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::store_error);
  const std::string& msg = s.error().message;
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "locked by another process")) << msg;
  EXPECT_TRUE(contains(msg, "100 ms")) << msg;
  EXPECT_LT(waited, std::chrono::seconds(4));  // the short timeout, not the 5 s default

  ASSERT_EQ(holder.exec("ROLLBACK"), SQLITE_OK);
  auto again = SqliteStore::open(path, milliseconds(100));
  EXPECT_TRUE(again.ok()) << again.error().describe();
}

TEST(SqliteStore, AWriteWhileAnotherConnectionHoldsTheLockFailsClearlyAndChangesNothing) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  auto opened = SqliteStore::open(path, milliseconds(100));
  ASSERT_TRUE(opened.ok()) << opened.error().describe();
  auto& s = *opened.value();
  RawDb holder(path);
  ASSERT_TRUE(holder.ok());
  ASSERT_EQ(holder.exec("BEGIN EXCLUSIVE"), SQLITE_OK) << holder.errmsg();

  auto st = s.create_instance(rec("u-1", "web", "host-a"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::store_error);
  EXPECT_TRUE(contains(st.error().message, "locked by another process")) << st.error().message;
  EXPECT_TRUE(contains(st.error().message, path)) << st.error().message;

  ASSERT_EQ(holder.exec("ROLLBACK"), SQLITE_OK);
  EXPECT_EQ(s.get_instance("u-1").error().code, Errc::not_found);
  EXPECT_TRUE(s.create_instance(rec("u-1", "web", "host-a")).ok());  // the store works again
}

TEST(SqliteStore, EightThreadsCreating200InstancesAllLand) {
  TempDir dir;
  auto s = open_ok(dir.file("virtcap.db"));
  ASSERT_TRUE(s);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::latch go(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&s, &go, &failures, t] {
      go.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        const std::string host = "host-" + std::to_string(t % 3);
        if (!s->create_instance(rec("u-" + id, "vm-" + id, host, i)).ok()) ++failures;
        // Interleave reads with the writes of the other threads.
        if (!s->live_instances_on({host}).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto all = s->live_instances_on({"host-0", "host-1", "host-2"});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), static_cast<std::size_t>(kThreads * kPerThread));
  std::set<std::string> distinct;
  for (const auto& r : *all) distinct.insert(r.uuid);
  EXPECT_EQ(distinct.size(), static_cast<std::size_t>(kThreads * kPerThread));
}

TEST(SqliteStore, TwoConnectionsOnOneFileWritingFromEightThreadsAllLand) {
  TempDir dir;
  const std::string path = dir.file("virtcap.db");
  auto first = open_ok(path);
  auto second = open_ok(path);
  ASSERT_TRUE(first && second);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::latch go(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    SqliteStore* store = (t % 2 == 0 ? first : second).get();
    threads.emplace_back([store, &go, &failures, t] {
      go.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        if (!store->create_instance(rec("u-" + id, "vm-" + id, "host-a", t * 1000 + i)).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (auto* s : {first.get(), second.get()}) {
    auto all = s->list_instances("host-a", false);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->size(), static_cast<std::size_t>(kThreads * kPerThread));
  }
}

}  // namespace
}  // namespace virtcap::store
