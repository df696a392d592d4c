// Reading a Prometheus text exposition in tests: samples by name and labels, families' types,
// a scrape over HTTP (curl), and promtool's verdict.
#ifndef LAZYPULL_TESTS_DEPLOY_PROM_TEXT_H_
#define LAZYPULL_TESTS_DEPLOY_PROM_TEXT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::testing {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct PromText {
  std::vector<PromSample> samples;
  std::map<std::string, std::string> types;  // family name → counter | gauge | histogram | ...

  // Sum of the samples named `name` whose labels include every pair of `labels` (0 if none).
  double Sum(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
  // Whether some sample matches (as Sum).
  bool Has(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
};

// Parses the text format (no escapes inside label values beyond \" and \\). InvalidArgument
// naming the line it cannot read.
absl::StatusOr<PromText> ParsePromText(const std::string& text);

// GET http://<address>/metrics with curl; the body (error on a non-200 answer).
absl::StatusOr<std::string> ScrapeMetrics(const std::string& address);
absl::StatusOr<PromText> Scrape(const std::string& address);

// Runs `promtool check metrics` on `text`; returns its output, or an error carrying it when
// promtool rejects the text.
absl::StatusOr<std::string> PromtoolCheck(const std::string& text);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_DEPLOY_PROM_TEXT_H_
