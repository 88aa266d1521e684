#include "virtcap/error.h"

namespace virtcap {

namespace {

struct ErrcRow {
  Errc code;
  std::string_view name;
  int http_status;
};

constexpr ErrcRow kErrcs[] = {
#define VIRTCAP_ERRC_ROW_(name, status, doc) {Errc::name, #name, status},
    VIRTCAP_ERRC(VIRTCAP_ERRC_ROW_)
#undef VIRTCAP_ERRC_ROW_
};

const ErrcRow& row(Errc code) {
  for (const auto& r : kErrcs)
    if (r.code == code) return r;
  return kErrcs[static_cast<std::size_t>(Errc::internal)];
}

}  // namespace

std::string_view to_string(Errc code) { return row(code).name; }

std::optional<Errc> errc_from_string(std::string_view name) {
  for (const auto& r : kErrcs)
    if (r.name == name) return r.code;
  return std::nullopt;
}

int http_status_of(Errc code) { return row(code).http_status; }

std::string Error::describe() const {
  std::string out(to_string(code));
  out += ": ";
  out += message;
  return out;
}

}  // namespace virtcap
