// AssignToLayers: which source layer each recorded file is prioritized in.
//
// A file the container opened is served by the topmost layer holding an entry of its name
// (the overlay view); since the recorder only reports regular files, that entry is a regular
// file or a hardlink. The file is prioritized in that layer only: lower layers' copies are
// hidden and prefetching them would be wasted bytes.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_LAYER_ASSIGNMENT_H_
#define LAZYPULL_TOOLS_OPTIMIZE_LAYER_ASSIGNMENT_H_

#include <map>
#include <set>
#include <string>
#include <vector>

namespace lazypull::optimize {

struct LayerFiles {
  std::string digest;                   // the source layer blob's digest ("sha256:...")
  std::set<std::string> regular_files;  // clean relative paths (see UnpackedLayer)
};

struct LayerAssignment {
  // Layer digest -> its recorded files, in recording order. A digest listed twice in the
  // image gets one list.
  std::map<std::string, std::vector<std::string>> by_layer;
  // Recorded files no layer holds (created by the program itself).
  std::vector<std::string> unassigned;
};

// `paths`: relative paths in first-open order; `layers`: base layer first. Pure; thread-safe.
LayerAssignment AssignToLayers(const std::vector<std::string>& paths,
                               const std::vector<LayerFiles>& layers);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_LAYER_ASSIGNMENT_H_
