// The GoogleTest global environment that stops the shared throwaway
// PostgreSQL cluster (postgres_cluster.h) when the test program ends. The
// cluster starts on first use, so programs that never ask for it pay nothing.
// Include this header in any test that calls pg_database_url().
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "support/postgres_cluster.h"

namespace virtcap::testing {

class PgEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { PgCluster::stop_shared(); }
};

inline ::testing::Environment* const kPgEnvironment = ::testing::AddGlobalTestEnvironment(new PgEnvironment);

// A fresh database on the shared cluster; fails the calling test (and
// returns "") when PostgreSQL cannot start. Never skips.
inline std::string pg_database_url() {
  std::string error;
  PgCluster* c = PgCluster::shared(&error);
  if (c == nullptr) {
    ADD_FAILURE() << "cannot start the throwaway PostgreSQL 15 cluster: " << error
                  << " (install postgresql-15 with scripts/install-deps)";
    return "";
  }
  auto url = c->create_database();
  if (!url.ok()) {
    ADD_FAILURE() << "cannot create a test database: " << url.error().message;
    return "";
  }
  return *url;
}

}  // namespace virtcap::testing
