// File helpers. Every output is written atomically: to a temporary name in the same folder,
// flushed to disk, then renamed over the final name, so a crash leaves either the old file
// or the new one, never half of one.
#pragma once
#include <functional>
#include <string>

namespace lisa {

std::string fs_read_text(const std::string& path);                        // throws naming the path
void fs_write_atomic(const std::string& path, const std::string& data);   // temp + fsync + rename
// Writes through a callback that receives a FILE* opened on the temporary name.
void fs_write_atomic_with(const std::string& path, const std::function<void(std::FILE*)>& write);
void fs_copy_atomic(const std::string& src, const std::string& dst);
bool fs_is_dir(const std::string& path);
bool fs_is_file(const std::string& path);
void fs_mkdirs(const std::string& path);
void fs_remove(const std::string& path);   // no error if absent
std::string fs_join(const std::string& a, const std::string& b);

}  // namespace lisa
