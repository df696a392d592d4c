// containerd's filter syntax (github.com/containerd/containerd/filters) for List:
//
//   selectors := selector ("," selector)*          -- all must match (AND)
//   selector  := fieldpath [operator value]         -- no operator: field is present
//   fieldpath := field ("." field)*
//   field     := quoted | [A-Za-z0-9_]+
//   operator  := "==" | "!=" | "~="                 -- ~= is a regular expression
//   value     := quoted | [^\s,]+
//
// Several filters passed to ParseFilters are OR'ed; none matches everything. Snapshot fields
// are those of containerd's storage adaptor: kind, name, parent, labels.<key>.
#ifndef LAZYPULL_SERVER_FILTERS_H_
#define LAZYPULL_SERVER_FILTERS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/snapshot_info.h"

namespace lazypull {

// Immutable parsed filter; thread-safe to Match concurrently.
class SnapshotFilter {
 public:
  // Parses `filters` (OR of each). InvalidArgument with the position for syntax errors.
  static absl::StatusOr<SnapshotFilter> Parse(const std::vector<std::string>& filters);

  bool Match(const SnapshotInfo& info) const;

  struct Selector;  // defined in filters.cc

 private:
  // Outer vector: OR; inner: AND.
  std::vector<std::vector<std::shared_ptr<const Selector>>> any_of_;
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_FILTERS_H_
