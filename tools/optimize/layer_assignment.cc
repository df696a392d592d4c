#include "tools/optimize/layer_assignment.h"

#include <algorithm>

namespace lazypull::optimize {

LayerAssignment AssignToLayers(const std::vector<std::string>& paths,
                               const std::vector<LayerFiles>& layers) {
  LayerAssignment out;
  std::map<std::string, std::set<std::string>> listed;
  for (const std::string& path : paths) {
    auto top = std::find_if(layers.rbegin(), layers.rend(), [&path](const LayerFiles& l) {
      return l.regular_files.count(path) > 0;
    });
    if (top == layers.rend()) {
      out.unassigned.push_back(path);
      continue;
    }
    if (listed[top->digest].insert(path).second) out.by_layer[top->digest].push_back(path);
  }
  return out;
}

}  // namespace lazypull::optimize
