#include "tools/optimize/container_spec.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "base/unique_fd.h"
#include "fmt/format.h"

namespace lazypull::optimize {
namespace {

constexpr char kDefaultPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// containerd's default capability set (pkg/oci populateDefaultUnixSpec).
const char* const kDefaultCaps[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
    "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL",    "CAP_AUDIT_WRITE",
};

// Reads <rootfs>/<rel> resolving symlinks inside rootfs only. "" if it does not exist.
absl::StatusOr<std::string> ReadInRoot(const std::string& rootfs, const char* rel) {
  UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid())
    return absl::InternalError(fmt::format("open {}: {}", rootfs, strerror(errno)));
  struct open_how how = {};
  how.flags = O_RDONLY | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  UniqueFd fd(static_cast<int>(syscall(SYS_openat2, root.get(), rel, &how, sizeof(how))));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::string();
    return absl::InternalError(fmt::format("open /{} of the image: {}", rel, strerror(errno)));
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(fmt::format("read /{}: {}", rel, strerror(errno)));
    if (n == 0) break;
    out.append(buf, n);
    if (out.size() > (16u << 20))
      return absl::InvalidArgumentError(fmt::format("/{} is huge", rel));
  }
  return out;
}

// One /etc/passwd or /etc/group line split on ':' (at least `min_fields`), by name or id.
struct DbEntry {
  std::string name;
  uint32_t id = 0;
  uint32_t gid = 0;                  // passwd only
  std::vector<std::string> members;  // group only
};
std::vector<DbEntry> ParseDb(const std::string& text, bool group) {
  std::vector<DbEntry> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, ':');
    if (f.size() < (group ? 3u : 4u)) continue;
    DbEntry e;
    e.name = f[0];
    if (!absl::SimpleAtoi(f[2], &e.id)) continue;
    if (!group && !absl::SimpleAtoi(f[3], &e.gid)) continue;
    if (group && f.size() > 3 && !f[3].empty()) e.members = absl::StrSplit(f[3], ',');
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status ResolveUser(const std::string& user, const std::string& rootfs, ProcessSpec& p) {
  if (user.empty()) return absl::OkStatus();
  auto passwd_text = ReadInRoot(rootfs, "etc/passwd");
  if (!passwd_text.ok()) return passwd_text.status();
  auto group_text = ReadInRoot(rootfs, "etc/group");
  if (!group_text.ok()) return group_text.status();
  std::vector<DbEntry> passwd = ParseDb(*passwd_text, false);
  std::vector<DbEntry> groups = ParseDb(*group_text, true);

  std::vector<std::string> parts = absl::StrSplit(user, absl::MaxSplits(':', 1));
  const std::string& u = parts[0];
  std::optional<std::string> user_name;
  bool gid_from_passwd = parts.size() == 1;
  if (absl::SimpleAtoi(u, &p.uid)) {
    for (const DbEntry& e : passwd) {
      if (e.id == p.uid) {
        user_name = e.name;
        if (gid_from_passwd) p.gid = e.gid;
        break;
      }
    }
  } else {
    const DbEntry* found = nullptr;
    for (const DbEntry& e : passwd) {
      if (e.name == u) {
        found = &e;
        break;
      }
    }
    if (found == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("image user \"{}\": no such user in the image's /etc/passwd", u));
    }
    p.uid = found->id;
    user_name = found->name;
    if (gid_from_passwd) p.gid = found->gid;
  }
  if (parts.size() == 2) {
    const std::string& g = parts[1];
    if (!absl::SimpleAtoi(g, &p.gid)) {
      bool ok = false;
      for (const DbEntry& e : groups) {
        if (e.name == g) {
          p.gid = e.id;
          ok = true;
          break;
        }
      }
      if (!ok) {
        return absl::InvalidArgumentError(
            fmt::format("image user \"{}\": no such group in the image's /etc/group", user));
      }
    }
  }
  if (user_name) {
    for (const DbEntry& e : groups) {
      for (const std::string& m : e.members) {
        if (m == *user_name && e.id != p.gid) p.additional_gids.push_back(e.id);
      }
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> StringArray(const nlohmann::json& j, const char* key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

absl::StatusOr<ProcessSpec> ProcessFromImage(const nlohmann::json& config,
                                             const std::vector<std::string>& command,
                                             const std::string& rootfs) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  auto it = config.find("config");
  const nlohmann::json& c = it != config.end() && it->is_object() ? *it : kEmpty;
  ProcessSpec p;
  if (!command.empty()) {
    p.args = command;
  } else {
    p.args = StringArray(c, "Entrypoint");
    std::vector<std::string> cmd = StringArray(c, "Cmd");
    p.args.insert(p.args.end(), cmd.begin(), cmd.end());
    if (p.args.empty()) {
      return absl::InvalidArgumentError(
          "the image has neither Entrypoint nor Cmd: give the command with --optimize-cmd");
    }
  }
  p.env = StringArray(c, "Env");
  bool has_path = false;
  for (const std::string& e : p.env) has_path |= absl::StartsWith(e, "PATH=");
  if (!has_path) p.env.insert(p.env.begin(), kDefaultPath);
  if (auto wd = c.find("WorkingDir"); wd != c.end() && wd->is_string() && !wd->empty()) {
    p.cwd = wd->get<std::string>();
  }
  std::string user;
  if (auto u = c.find("User"); u != c.end() && u->is_string()) user = u->get<std::string>();
  if (auto st = ResolveUser(user, rootfs, p); !st.ok()) return st;
  return p;
}

void ApplyProcessSpec(const ProcessSpec& process, const std::string& rootfs, nlohmann::json& spec) {
  nlohmann::json& proc = spec["process"];
  proc["terminal"] = false;
  proc["args"] = process.args;
  proc["env"] = process.env;
  proc["cwd"] = process.cwd;
  nlohmann::json user = {{"uid", process.uid}, {"gid", process.gid}};
  if (!process.additional_gids.empty()) user["additionalGids"] = process.additional_gids;
  proc["user"] = std::move(user);
  nlohmann::json caps = nlohmann::json::array();
  for (const char* c : kDefaultCaps) caps.push_back(c);
  proc["capabilities"] = {{"bounding", caps}, {"effective", caps}, {"permitted", caps}};
  spec["root"] = {{"path", rootfs}, {"readonly", false}};
  spec["hostname"] = "lazypull-optimize";
}

absl::StatusOr<std::vector<std::string>> ParseCommandLine(std::string_view text) {
  size_t first = text.find_first_not_of(" \t\n");
  if (first != std::string_view::npos && text[first] == '[') {
    auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_array() || j.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("command {}: not a non-empty JSON array of strings", text));
    }
    std::vector<std::string> out;
    for (const auto& v : j) {
      if (!v.is_string()) {
        return absl::InvalidArgumentError(
            fmt::format("command {}: not a JSON array of strings", text));
      }
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (ch == ' ' || ch == '\t' || ch == '\n') {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (ch == '\\') {
      if (++i >= text.size()) return absl::InvalidArgumentError("command ends with a backslash");
      if (text[i] != '\n') word.push_back(text[i]);
    } else if (ch == '\'') {
      size_t end = text.find('\'', i + 1);
      if (end == std::string_view::npos) {
        return absl::InvalidArgumentError(fmt::format("command {}: unterminated '", text));
      }
      word.append(text.substr(i + 1, end - i - 1));
      i = end;
    } else if (ch == '"') {
      for (++i;; ++i) {
        if (i >= text.size()) {
          return absl::InvalidArgumentError(fmt::format("command {}: unterminated \"", text));
        }
        if (text[i] == '"') break;
        if (text[i] == '\\' && i + 1 < text.size() &&
            std::string_view("\\\"$`\n").find(text[i + 1]) != std::string_view::npos) {
          if (text[++i] != '\n') word.push_back(text[i]);
          continue;
        }
        word.push_back(text[i]);
      }
    } else {
      word.push_back(ch);
    }
  }
  if (in_word) out.push_back(std::move(word));
  if (out.empty()) return absl::InvalidArgumentError("empty command");
  return out;
}

}  // namespace lazypull::optimize
