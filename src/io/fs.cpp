#include <cstdio>
#include "io/fs.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <fcntl.h>
#include <unistd.h>

#include "core/error.h"

namespace lisa {

std::string fs_read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(strf("%s: cannot open for reading (%s)", path.c_str(), std::strerror(errno)));
    std::stringstream ss;
    ss << f.rdbuf();
    if (f.bad()) fail(strf("%s: read error", path.c_str()));
    return ss.str();
}

void fs_write_atomic_with(const std::string& path, const std::function<void(std::FILE*)>& write) {
    std::string tmp = path + strf(".tmp.%d", (int)getpid());
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail(strf("%s: cannot create (%s)", tmp.c_str(), std::strerror(errno)));
    try {
        write(f);
        if (std::fflush(f) != 0 || fsync(fileno(f)) != 0)
            fail(strf("%s: write failed (%s)", tmp.c_str(), std::strerror(errno)));
    } catch (...) {
        std::fclose(f);
        std::remove(tmp.c_str());
        throw;
    }
    if (std::fclose(f) != 0) {
        std::remove(tmp.c_str());
        fail(strf("%s: close failed (%s)", tmp.c_str(), std::strerror(errno)));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        std::remove(tmp.c_str());
        fail(strf("%s: rename from temporary file failed (%s)", path.c_str(), std::strerror(e)));
    }
}

void fs_write_atomic(const std::string& path, const std::string& data) {
    fs_write_atomic_with(path, [&](std::FILE* f) {
        if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size())
            fail(strf("%s: write failed (%s)", path.c_str(), std::strerror(errno)));
    });
}

void fs_copy_atomic(const std::string& src, const std::string& dst) { fs_write_atomic(dst, fs_read_text(src)); }

bool fs_is_dir(const std::string& path) {
    std::error_code ec;
    return std::filesystem::is_directory(path, ec);
}

bool fs_is_file(const std::string& path) {
    std::error_code ec;
    return std::filesystem::is_regular_file(path, ec);
}

void fs_mkdirs(const std::string& path) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) fail(strf("%s: cannot create folder (%s)", path.c_str(), ec.message().c_str()));
}

void fs_remove(const std::string& path) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
}

std::string fs_join(const std::string& a, const std::string& b) {
    if (a.empty()) return b;
    return a.back() == '/' ? a + b : a + "/" + b;
}

}  // namespace lisa
