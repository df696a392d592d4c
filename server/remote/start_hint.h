// StartHintFromConfig: what a container of an image will start, from its image config, for
// the startup prefetch (fetcher/startup/elf_prefetcher.h): the candidate paths of argv[0] of
// Entrypoint + Cmd looked up the way the runtime's exec does (a name with a slash as it is,
// relative to WorkingDir; a bare name in each directory of the config's PATH, or the default
// PATH), its arguments and working directory (for an interpreter's start: a script, `-c`
// code), and the files runc reads while it creates the container (/etc/passwd, /etc/group).
// An image with neither Entrypoint nor Cmd gives no executables. Pure function.
#ifndef LAZYPULL_SERVER_REMOTE_START_HINT_H_
#define LAZYPULL_SERVER_REMOTE_START_HINT_H_

#include "fetcher/oci/image_config.h"
#include "fetcher/startup/elf_prefetcher.h"

namespace lazypull::remote {

startup::StartHint StartHintFromConfig(const oci::ImageConfig& config);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_START_HINT_H_
