// SerializeZtoc: a Ztoc to the FlatBuffer bytes soci-snapshotter reads (ztoc/fbs/ztoc.fbs),
// with every string present (empty rather than absent) as soci's own writer does.
// Thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_SERIALIZER_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_SERIALIZER_H_

#include <string>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/ztoc.h"

namespace lazypull::soci {

// InvalidArgument if the zTOC cannot be represented (sizes beyond int64, span digests not
// matching the checkpoints, or a result over the 2 GiB FlatBuffer limit).
absl::StatusOr<std::string> SerializeZtoc(const Ztoc& ztoc);

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_SERIALIZER_H_
