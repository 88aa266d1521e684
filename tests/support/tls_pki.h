// A throwaway PKI made at test time by the `openssl` binary (argv, no shell,
// a deadline per command): two CAs and server certificates for 127.0.0.1
// (SAN IP) that are valid now, expired, not yet valid, or for another name.
// `openssl ca` takes explicit -startdate/-enddate, so no clock is faked.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "support/test_support.h"

namespace virtcap::testing {

class TestPki {
 public:
  struct Pair {
    std::string cert, key;
  };

  TestPki() {
    dir_.write("index.txt", "");
    dir_.write("serial", "01\n");
    cnf_ = dir_.write("openssl.cnf", config_text());
    ca_ = make_ca("ca", "virtcap test CA");
    other_ca_ = make_ca("other-ca", "virtcap other test CA");
    server_ = issue("server", ca_, "server_ext", {"-days", "2"});
    expired_ =
        issue("expired", ca_, "server_ext", {"-startdate", "20200101000000Z", "-enddate", "20200102000000Z"});
    future_ =
        issue("future", ca_, "server_ext", {"-startdate", "20900101000000Z", "-enddate", "20910101000000Z"});
    other_name_ = issue("other-name", ca_, "other_name_ext", {"-days", "2"});
    other_server_ = issue("other-server", other_ca_, "server_ext", {"-days", "2"});
    stray_key_ = issue("stray", ca_, "server_ext", {"-days", "2"}).key;
  }

  const std::string& ca() const { return ca_.cert; }              // signed every server pair below
  const std::string& other_ca() const { return other_ca_.cert; }  // signed only other_server()
  const Pair& server() const { return server_; }                  // 127.0.0.1 and localhost, valid now
  const Pair& expired() const { return expired_; }                // valid in 2020 only
  const Pair& not_yet_valid() const { return future_; }           // valid from 2090
  const Pair& other_name() const { return other_name_; }          // other.example only
  const Pair& other_server() const { return other_server_; }      // as server(), signed by other_ca()
  const std::string& stray_key() const { return stray_key_; }     // matches no certificate above
  const TempDir& dir() const { return dir_; }
  // A client certificate (clientAuth) whose CN and one DNS subjectAltName are
  // `host`, signed by ca() when trusted, else by other_ca().
  Pair client(const std::string& host, bool trusted = true) const {
    Pair p = request("client-" + host, host);
    const std::string ext = dir_.write("client-" + host + ".ext",
                                       "[client_ext]\nbasicConstraints = critical,CA:FALSE\n"
                                       "keyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n"
                                       "subjectAltName = DNS:" +
                                           host + "\n");
    const Pair& ca = trusted ? ca_ : other_ca_;
    openssl({"ca", "-batch", "-config", cnf_, "-cert", ca.cert, "-keyfile", ca.key, "-in",
             dir_.sub("client-" + host + ".csr"), "-out", p.cert, "-extfile", ext, "-extensions",
             "client_ext", "-notext", "-days", "2"});
    return p;
  }

 private:
  void openssl(std::vector<std::string> args) const {
    args.insert(args.begin(), "openssl");
    auto r = proc::run(args, std::chrono::seconds(30));
    if (!r.ok()) throw std::runtime_error("openssl: " + r.error().message);
    if (r->exit_code != 0) throw std::runtime_error("openssl " + args[1] + " failed: " + r->err);
  }

  Pair request(const std::string& name, const std::string& cn) const {
    Pair p{dir_.sub(name + ".pem"), dir_.sub(name + ".key")};
    openssl({"req", "-new", "-config", cnf_, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", p.key, "-out", dir_.sub(name + ".csr"), "-subj", "/CN=" + cn});
    return p;
  }

  Pair make_ca(const std::string& name, const std::string& cn) const {
    Pair p = request(name, cn);
    openssl({"ca", "-batch", "-config", cnf_, "-selfsign", "-keyfile", p.key, "-in", dir_.sub(name + ".csr"),
             "-out", p.cert, "-extensions", "ca_ext", "-startdate", "20000101000000Z", "-enddate",
             "20991231000000Z", "-notext"});
    return p;
  }

  Pair issue(const std::string& name, const Pair& ca, const std::string& ext,
             std::vector<std::string> dates) const {
    Pair p = request(name, "127.0.0.1");
    std::vector<std::string> args = {"ca",    "-batch",   "-config",     cnf_,  "-cert",
                                     ca.cert, "-keyfile", ca.key,        "-in", dir_.sub(name + ".csr"),
                                     "-out",  p.cert,     "-extensions", ext,   "-notext"};
    args.insert(args.end(), dates.begin(), dates.end());
    openssl(args);
    return p;
  }

  std::string config_text() const {
    return "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
           "[ca]\ndefault_ca = test_ca\n"
           "[test_ca]\ndir = " +
           dir_.str() +
           "\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\nserial = $dir/serial\ndefault_md = sha256\n"
           "policy = policy_any\nunique_subject = no\ncopy_extensions = none\n"
           "[policy_any]\ncommonName = supplied\n"
           "[ca_ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
           "subjectKeyIdentifier = hash\n"
           "[server_ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
           "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n"
           "[other_name_ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
           "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:other.example\n";
  }

  TempDir dir_{"virtcap-pki"};
  std::string cnf_;
  Pair ca_, other_ca_, server_, expired_, future_, other_name_, other_server_;
  std::string stray_key_;
};

// One PKI per test process (each ctest test is a process of its own).
inline const TestPki& test_pki() {
  static const TestPki pki;
  return pki;
}

}  // namespace virtcap::testing
