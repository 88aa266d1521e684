// The man page and the bash completion, generated from the CLI11
// definitions themselves, so they can never list a command or an option the
// binary does not have (`virtcap docs man|bash-completion`).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace virtcap::cli {

std::string man_page(const CLI::App& app, const std::string& version);
std::string bash_completion(const CLI::App& app);

}  // namespace virtcap::cli
