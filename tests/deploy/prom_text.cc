#include "tests/deploy/prom_text.h"

#include <cstdlib>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

bool Matches(const PromSample& s, const std::string& name,
             const std::map<std::string, std::string>& labels) {
  if (s.name != name) return false;
  for (const auto& [k, v] : labels) {
    auto it = s.labels.find(k);
    if (it == s.labels.end() || it->second != v) return false;
  }
  return true;
}

}  // namespace

double PromText::Sum(const std::string& name,
                     const std::map<std::string, std::string>& labels) const {
  double sum = 0;
  for (const PromSample& s : samples) {
    if (Matches(s, name, labels)) sum += s.value;
  }
  return sum;
}

bool PromText::Has(const std::string& name,
                   const std::map<std::string, std::string>& labels) const {
  for (const PromSample& s : samples) {
    if (Matches(s, name, labels)) return true;
  }
  return false;
}

absl::StatusOr<PromText> ParsePromText(const std::string& text) {
  PromText out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::vector<std::string> f = absl::StrSplit(line.substr(7), ' ');
      if (f.size() == 2) out.types[f[0]] = f[1];
      continue;
    }
    if (line[0] == '#') continue;
    PromSample s;
    size_t i = line.find_first_of("{ ");
    if (i == std::string::npos) return absl::InvalidArgumentError("bad sample line: " + line);
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find("=\"", i);
        if (eq == std::string::npos) return absl::InvalidArgumentError("bad labels: " + line);
        std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) ++j;
          value.push_back(line[j]);
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    std::string rest = line.substr(i);
    std::vector<std::string> f = absl::StrSplit(rest, ' ', absl::SkipEmpty());
    if (f.empty()) return absl::InvalidArgumentError("no value: " + line);
    if (f[0] == "Nan" || f[0] == "NaN") {
      s.value = 0;
    } else if (!absl::SimpleAtod(f[0], &s.value)) {
      return absl::InvalidArgumentError("bad value: " + line);
    }
    out.samples.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::string> ScrapeMetrics(const std::string& address) {
  absl::StatusOr<CommandResult> r =
      RunCommand({"curl", "-sS", "--fail", "--max-time", "10", "http://" + address + "/metrics"},
                 std::chrono::seconds(20));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::UnavailableError(absl::StrCat("scrape of ", address, " failed: ", r->output));
  }
  return r->output;
}

absl::StatusOr<PromText> Scrape(const std::string& address) {
  absl::StatusOr<std::string> text = ScrapeMetrics(address);
  if (!text.ok()) return text.status();
  return ParsePromText(*text);
}

absl::StatusOr<std::string> PromtoolCheck(const std::string& text) {
  TempDir dir("lpprom");
  if (absl::Status s = WriteFile(dir.Sub("metrics.txt"), text); !s.ok()) return s;
  absl::StatusOr<CommandResult> r =
      RunShell("promtool check metrics < " + dir.Sub("metrics.txt"), std::chrono::seconds(60));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "promtool check metrics rejected the exposition (exit ", r->exit_code, "):\n", r->output));
  }
  return r->output;
}

}  // namespace lazypull::testing
