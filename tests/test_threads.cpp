// The compute-thread count: what the machine offers, and the governor that follows the load.
// The governor is driven here with a synthetic machine whose per-token time at each thread count
// is given, so each decision can be checked; tests/test_train.cpp checks that a run's numbers do
// not depend on the count, and bench/contention.sh measures real contention.
#include <sched.h>

#include <functional>

#include "core/threads.h"
#include "test_util.h"

using namespace lisa;

// Runs the governor for `steps` steps on a machine where a step at n threads takes spt(n) seconds
// per token for 1000 tokens and the threads wait `wait(n)` of their time. Returns the counts used.
static std::vector<int> drive(thread_governor* g, int steps, const std::function<double(int)>& spt,
                              const std::function<double(int)>& wait, std::vector<std::string>* notes = nullptr) {
    std::vector<int> used;
    for (int s = 0; s < steps; s++) {
        const int n = g->cur;
        used.push_back(n);
        const double secs = spt(n) * 1000.0;
        std::string why;
        thread_governor_step(g, secs, 1000.0, wait(n) * secs * n, &why);
        if (notes && !why.empty()) notes->push_back(why);
    }
    return used;
}

static int count(const std::vector<int>& v, int x, size_t from = 0) {
    int c = 0;
    for (size_t i = from; i < v.size(); i++) c += v[i] == x;
    return c;
}

TEST(thread_governor, an_idle_machine_keeps_every_thread_and_never_probes) {
    thread_governor g;
    thread_governor_init(&g, 4);
    const auto used = drive(&g, 300, [](int n) { return 1e-3 / n; }, [](int) { return 0.0; });
    EXPECT_EQ(count(used, 4), 300) << "a probe on an idle machine costs speed for nothing";
}

TEST(thread_governor, a_busy_core_moves_to_the_faster_count_and_says_why) {
    // two cores, one taken by another program: our two threads share the free one, and one
    // thread is 20% faster per token (no barriers to wait at)
    thread_governor g;
    thread_governor_init(&g, 2);
    std::vector<std::string> notes;
    const auto used = drive(&g, 100, [](int n) { return n == 2 ? 1.2e-3 : 1.0e-3; },
                            [](int n) { return n == 2 ? 0.45 : 0.01; }, &notes);
    EXPECT_EQ(used[0], 2);
    EXPECT_GE(count(used, 1, 10), 80) << "after a few steps, one thread nearly always";
    ASSERT_FALSE(notes.empty());
    EXPECT_NE(notes[0].find("1 compute thread from now"), std::string::npos) << notes[0];
    EXPECT_NE(notes[0].find("another program"), std::string::npos) << notes[0];
}

TEST(thread_governor, waiting_threads_that_are_still_faster_are_kept_and_probed_less_and_less) {
    // the threads wait (contention), yet all four are still the fastest: probes lose, back off
    thread_governor g;
    thread_governor_init(&g, 4);
    const auto used = drive(&g, 400, [](int n) { return 1e-3 / n; }, [](int) { return 0.3; });
    const int probes = 400 - count(used, 4);
    EXPECT_GE(probes, 3) << "it did try";
    EXPECT_LE(probes, 12) << "losing probes back off (4, 8, ... 64 steps apart)";
}

TEST(thread_governor, the_count_comes_back_when_the_machine_frees_up) {
    thread_governor g;
    thread_governor_init(&g, 2);
    bool busy = true;
    auto spt = [&](int n) { return busy ? (n == 2 ? 1.3e-3 : 1.0e-3) : 1e-3 / n; };
    auto wait = [&](int n) { return busy && n == 2 ? 0.5 : 0.0; };
    auto used = drive(&g, 60, spt, wait);
    ASSERT_EQ(used.back(), 1);
    busy = false;  // the other program ends
    std::vector<std::string> notes;
    used = drive(&g, 150, spt, wait, &notes);
    EXPECT_EQ(used.back(), 2);
    EXPECT_GE(count(used, 2, 80), 68) << "back to both threads for good";
    ASSERT_FALSE(notes.empty());
    EXPECT_NE(notes.back().find("free again"), std::string::npos) << notes.back();
}

TEST(thread_governor, noise_below_the_margin_does_not_flip_the_count) {
    // contention that costs nothing measurable: 1 and 2 threads within 5% of each other
    thread_governor g;
    thread_governor_init(&g, 2);
    const auto used = drive(&g, 200, [](int n) { return n == 2 ? 1.0e-3 : 1.04e-3; }, [](int) { return 0.2; });
    EXPECT_EQ(used.back(), 2);
    EXPECT_GE(count(used, 2), 190);
}

TEST(threads_available, follows_the_affinity_mask) {
    cpu_set_t old;
    ASSERT_EQ(sched_getaffinity(0, sizeof old, &old), 0);
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
        if (CPU_ISSET(c, &old)) first = c;
    ASSERT_GE(first, 0);
    std::string why;
    const int all = threads_available(&why);
    EXPECT_GE(all, 1);
    EXPECT_LE(all, CPU_COUNT(&old));
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
    EXPECT_EQ(threads_available(&why), 1);
    EXPECT_NE(why.find("1 CPU"), std::string::npos) << why;
    ASSERT_EQ(sched_setaffinity(0, sizeof old, &old), 0);
}

TEST(threads_wait_seconds, is_known_on_linux_and_never_decreases) {
    const double a = threads_wait_seconds();
    ASSERT_GE(a, 0.0) << "/proc/self/task/*/schedstat unreadable";
    volatile double x = 0;
    for (int i = 0; i < 2000000; i++) x = x + 1e-9 * i;
    EXPECT_GE(threads_wait_seconds(), a);
}

TEST(threads_choose, the_flag_then_omp_num_threads_fix_the_count) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    const std::string saved = env ? env : "";
    thread_choice c = threads_choose(3);
    EXPECT_EQ(c.n, 3);
    EXPECT_TRUE(c.fixed);
    EXPECT_EQ(c.why, "--threads");
    setenv("OMP_NUM_THREADS", "5", 1);
    c = threads_choose(0);
    EXPECT_EQ(c.n, 5);
    EXPECT_TRUE(c.fixed);
    unsetenv("OMP_NUM_THREADS");
    c = threads_choose(0);
    EXPECT_FALSE(c.fixed);
    EXPECT_EQ(c.n, threads_available(nullptr));
    if (env) setenv("OMP_NUM_THREADS", saved.c_str(), 1);
}
