// safetensors: bit-exact round trips for each dtype, and every kind of bad file refused with a
// message naming the file and the tensor.
#include "core/error.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace lisa;
using lisa_test::temp_dir;

static std::string slurp(const std::string& p) { return fs_read_text(p); }

// raw 16-bit patterns, including subnormals, infinities and a NaN
static std::vector<uint16_t> patterns16() {
    std::vector<uint16_t> v;
    for (uint32_t i = 0; i < 65536; i += 97) v.push_back((uint16_t)i);
    v.push_back(0x7c00);
    v.push_back(0x0001);
    return v;
}

TEST(safetensors, round_trip_each_dtype_bit_for_bit) {
    temp_dir td;
    std::vector<float> f32 = {0.0f, -0.0f, 1.5f, -3.25e-8f, 1e30f, INFINITY};
    std::vector<uint16_t> h = patterns16();
    std::vector<int32_t> i32 = {1, -2, 2147483647};
    std::vector<int64_t> i64 = {-1, 1ll << 40};
    std::string p = td.path + "/t.safetensors";
    st_write(p, {{"a.f32", {2, 3}, dtype::f32, f32.data(), dtype::f32},
                 {"b.bf16", {(int64_t)h.size()}, dtype::bf16, h.data(), dtype::bf16},
                 {"c.f16", {1, (int64_t)h.size()}, dtype::f16, h.data(), dtype::f16},
                 {"d.i32", {3}, dtype::i32, i32.data(), dtype::i32},
                 {"e.i64", {2}, dtype::i64, i64.data(), dtype::i64},
                 {"f.empty", {0, 4}, dtype::f32, nullptr, dtype::f32}},
             {{"format", "pt"}, {"note", "x"}});
    auto f = st_open(p);
    ASSERT_EQ(f->tensors.size(), 6u);
    EXPECT_EQ(f->metadata.at("note"), "x");
    auto same = [&](const char* name, const void* want, size_t nbytes, std::vector<int64_t> shape, dtype dt) {
        const st_tensor* t = st_find(*f, name);
        ASSERT_NE(t, nullptr) << name;
        EXPECT_EQ(t->dt, dt) << name;
        EXPECT_EQ(t->shape, shape) << name;
        ASSERT_EQ(t->nbytes, nbytes) << name;
        if (nbytes > 0) {  // memcmp(null, .., 0) is undefined behaviour
            EXPECT_EQ(std::memcmp(t->data, want, nbytes), 0) << name;
        }
    };
    same("a.f32", f32.data(), 24, {2, 3}, dtype::f32);
    same("b.bf16", h.data(), h.size() * 2, {(int64_t)h.size()}, dtype::bf16);
    same("c.f16", h.data(), h.size() * 2, {1, (int64_t)h.size()}, dtype::f16);
    same("d.i32", i32.data(), 12, {3}, dtype::i32);
    same("e.i64", i64.data(), 16, {2}, dtype::i64);
    same("f.empty", nullptr, 0, {0, 4}, dtype::f32);
    // the data section starts 8-byte aligned, as the format recommends
    std::string raw = slurp(p);
    uint64_t n;
    std::memcpy(&n, raw.data(), 8);
    EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(safetensors, converts_f32_to_bf16_and_f16_on_write) {
    temp_dir td;
    std::vector<float> x = {1.0f, 1.00390625f /* bf16 tie */, -2.5f, 65504.0f, 1e-7f};
    st_write(td.path + "/c.safetensors", {{"bf", {5}, dtype::bf16, x.data(), dtype::f32},
                                         {"hf", {5}, dtype::f16, x.data(), dtype::f32}});
    auto f = st_open(td.path + "/c.safetensors");
    const st_tensor* bf = st_find(*f, "bf");
    const st_tensor* hf = st_find(*f, "hf");
    for (int i = 0; i < 5; i++) {
        uint16_t b, hh;
        std::memcpy(&b, bf->data + 2 * i, 2);
        std::memcpy(&hh, hf->data + 2 * i, 2);
        EXPECT_EQ(b, f32_to_bf16(x[i]));
        EXPECT_EQ(hh, f32_to_f16(x[i]));
    }
}

// Writes a file from a raw header string and a data section of `data_bytes` zero bytes.
static std::string raw_file(const temp_dir& td, const std::string& header, size_t data_bytes, int64_t lie_len = -1) {
    std::string p = td.path + "/bad.safetensors";
    std::string s(8, '\0');
    uint64_t n = lie_len >= 0 ? (uint64_t)lie_len : header.size();
    std::memcpy(s.data(), &n, 8);
    s += header;
    s += std::string(data_bytes, '\0');
    lisa_test::write_file(p, s);
    return p;
}

static std::string open_error(const std::string& p) {
    try {
        st_open(p);
    } catch (const lisa::error& e) {
        return e.what();
    }
    return "";
}

TEST(safetensors, bad_files_are_refused_with_file_and_tensor_named) {
    temp_dir td;
    struct bad_case {
        const char* what;
        std::string header;
        size_t      data;
        int64_t     lie;
        const char* expect;  // substring of the message
    };
    std::vector<bad_case> cases = {
        {"header not JSON", "{\"a\": {", 0, -1, "not valid JSON"},
        {"header not an object", "[1,2]", 0, -1, "must be a JSON object"},
        {"header length past end", "{}", 0, 1000, "does not fit"},
        {"size lie", R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12, -1, "'w': data_offsets hold 12 bytes"},
        {"truncated data", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8, -1, "'w': data_offsets end 16 is past"},
        {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, -1, "overlap"},
        {"unknown dtype", R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8, -1, "'w': unsupported dtype F64"},
        {"negative dim", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, -1, "'w': shape entries"},
        {"missing offsets", R"({"w":{"dtype":"F32","shape":[1]}})", 4, -1, "'w': field 'data_offsets'"},
        {"begin after end", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4, -1, "begin is after end"},
        {"bad metadata", R"({"__metadata__":{"a":1}})", 0, -1, "__metadata__ field 'a'"},
    };
    for (const auto& c : cases) {
        std::string p = raw_file(td, c.header, c.data, c.lie);
        std::string msg = open_error(p);
        EXPECT_NE(msg.find(p), std::string::npos) << c.what << ": message must name the file: " << msg;
        EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": got: " << msg;
    }
    // shorter than the length prefix, and a missing file
    lisa_test::write_file(td.path + "/tiny.safetensors", "abc");
    EXPECT_NE(open_error(td.path + "/tiny.safetensors").find("at least an 8-byte"), std::string::npos);
    EXPECT_NE(open_error(td.path + "/none.safetensors").find("cannot open"), std::string::npos);
}

TEST(safetensors, truncating_a_valid_file_anywhere_is_an_error_not_a_crash) {
    temp_dir td;
    std::vector<float> x(64, 1.0f);
    std::string p = td.path + "/ok.safetensors";
    st_write(p, {{"x", {8, 8}, dtype::f32, x.data(), dtype::f32}, {"y", {64}, dtype::f32, x.data(), dtype::f32}});
    std::string full = slurp(p);
    for (size_t cut = 0; cut < full.size(); cut += 7) {
        lisa_test::write_file(p, full.substr(0, cut));
        EXPECT_FALSE(open_error(p).empty()) << "cut at " << cut;
    }
    // corrupt single header bytes: must never crash (either a clean error or a valid parse)
    for (size_t i = 8; i < 8 + 40 && i < full.size(); i++) {
        std::string c = full;
        c[i] = (char)(c[i] ^ 0x5a);
        lisa_test::write_file(p, c);
        (void)open_error(p);
    }
}

TEST(safetensors, write_is_atomic_and_leaves_no_temporary) {
    temp_dir td;
    std::vector<float> x(4, 2.0f);
    st_write(td.path + "/m.safetensors", {{"x", {4}, dtype::f32, x.data(), dtype::f32}});
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator(td.path)) {
        (void)e;
        n++;
    }
    EXPECT_EQ(n, 1);
    // a failing write (unconvertible source) leaves neither a partial file nor a temporary
    std::vector<uint16_t> h(4);
    EXPECT_THROW(st_write(td.path + "/bad.safetensors", {{"x", {4}, dtype::bf16, h.data(), dtype::f16}}), lisa::error);
    EXPECT_FALSE(fs_is_file(td.path + "/bad.safetensors"));
    n = 0;
    for (auto& e : std::filesystem::directory_iterator(td.path)) {
        (void)e;
        n++;
    }
    EXPECT_EQ(n, 1);
}
