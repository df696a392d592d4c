// FileStartObserver: told when a program starts reading a regular file of a lazy layer from
// its beginning — what execve and the dynamic loader do first with a binary or library, so a
// prefetcher can look at the file's header and fetch what the program will need next before
// it asks (fetcher/startup/elf_prefetcher.h).
//
// Called by LayerReader on the reading thread (a FUSE worker, the EROFS blob file system),
// after the read's bytes were copied and outside every lock of the reader. Implementations
// must return at once (queue the work elsewhere), must not throw, and must not read from the
// reader on the calling thread: the read that triggered the call is still being answered.
#ifndef LAZYPULL_FETCHER_LAYER_READER_FILE_START_OBSERVER_H_
#define LAZYPULL_FETCHER_LAYER_READER_FILE_START_OBSERVER_H_

#include <string>
#include <string_view>

#include "fetcher/format/layer_index.h"

namespace lazypull {

class FileStartObserver {
 public:
  virtual ~FileStartObserver() = default;
  // A read at offset 0 of regular file `ino` of the layer `layer_id` (LayerReader::layer_id)
  // succeeded. `head` holds the first bytes it returned, or is empty when the reader served
  // the read without copying them (a zero-copy reply from the cache: read them back with
  // LayerReader::Read if needed; they are local). May be called again for the same file.
  virtual void OnFileStart(const std::string& layer_id, format::Ino ino, std::string_view head) = 0;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_FILE_START_OBSERVER_H_
