// What the optimizer runs and how: the process an image's config describes (entrypoint + cmd,
// env, working directory, user), and the edits that turn `runc spec`'s default document into
// a throw-away container for it.
//
// The container keeps runc's default namespaces (its network namespace has only a loopback
// interface: no network) and gets containerd's default capability set, so a program sees
// what it would under `ctr run`.
//
// All functions are pure except ProcessFromImage reading the image's /etc/passwd and
// /etc/group (without following symlinks out of the root). Thread-safe.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_CONTAINER_SPEC_H_
#define LAZYPULL_TOOLS_OPTIMIZE_CONTAINER_SPEC_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lazypull::optimize {

struct ProcessSpec {
  std::vector<std::string> args;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string cwd = "/";
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additional_gids;
};

// The process of the image config `config` (the whole config document; its "config" object
// may be absent). `command`, when not empty, replaces entrypoint + cmd. The user ("", "uid",
// "uid:gid", "name", "name:group", ...) is resolved against <rootfs>/etc/passwd and
// /etc/group like containerd does; a name missing there is InvalidArgument, as is an image
// with neither entrypoint nor cmd and no `command`. PATH gets containerd's default when the
// image sets none.
absl::StatusOr<ProcessSpec> ProcessFromImage(const nlohmann::json& config,
                                             const std::vector<std::string>& command,
                                             const std::string& rootfs);

// Edits `spec` (as `runc spec` writes it) to run `process` on `rootfs` (an absolute path):
// args, env, cwd, user, no terminal, a writable root (writes land in the overlay's scratch
// upper directory), containerd's default capabilities
// and hostname "lazypull-optimize".
void ApplyProcessSpec(const ProcessSpec& process, const std::string& rootfs, nlohmann::json& spec);

// Parses a command given as text: a JSON array of strings (`["/bin/sh","-c","cat /x"]`) or
// words separated by blanks, with '...' and "..." quoting and backslash escapes as a POSIX
// shell splits them (no expansions). InvalidArgument for an unterminated quote, an empty
// command or a JSON value that is not an array of strings.
absl::StatusOr<std::vector<std::string>> ParseCommandLine(std::string_view text);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_CONTAINER_SPEC_H_
