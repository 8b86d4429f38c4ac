/* A fixed-rate reacher controller in C: the C export of a student + MuJoCo's C API, no Python.
 *
 *   crl-distill export --from STUDENTS --format c --out build/policy.onnx   # policy.{h,c,xml}
 *   examples/c_controller/build.sh build build/controller
 *   build/controller build/policy.xml [episodes] [--realtime] [--seed N]
 *
 * The model is the training env's own MJCF (policy.xml: timestep, gears and the frame skip as
 * the custom numeric crl_frame_skip). Starts and goals are drawn as the reacher env draws them;
 * the observation is built as the env builds it: cos(q0, q1), sin(q0, q1), fingertip xyz,
 * fingertip world-frame velocity, then the goal (target xyz). Prints, per goal, reached or not
 * and time at goal; then success_any and mean time at goal with 95% intervals, and the
 * inference time per action (p50, p99) and, with --realtime, the control period error.
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mujoco/mujoco.h>

#include "policy.h"

#define STATE_SIZE 10
#define GOAL_SIZE 3

static unsigned long long rng_state = 88172645463325252ULL;

static double uniform(double lo, double hi) /* xorshift64: same sequence on every platform */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void observe(const mjModel *m, mjData *d, int tip, const float *goal, float *obs)
{
    mjtNum vel[6];
    mj_objectVelocity(m, d, mjOBJ_BODY, tip, vel, 0); /* [angular, linear], world frame */
    obs[0] = (float)cos(d->qpos[0]);
    obs[1] = (float)cos(d->qpos[1]);
    obs[2] = (float)sin(d->qpos[0]);
    obs[3] = (float)sin(d->qpos[1]);
    for (int i = 0; i < 3; ++i) {
        obs[4 + i] = (float)d->xpos[3 * tip + i];
        obs[7 + i] = (float)vel[3 + i];
        obs[STATE_SIZE + i] = goal[i];
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s policy.xml [episodes] [--realtime] [--seed N]\n", argv[0]);
        return 2;
    }
    int episodes = 8, realtime = 0;
    for (int i = 2; i < argc; ++i) {
        if (!strcmp(argv[i], "--realtime"))
            realtime = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            rng_state += 0x9E3779B97F4A7C15ULL * (unsigned long long)atoll(argv[++i]);
        else
            episodes = atoi(argv[i]);
    }
    if (POLICY_OBS_SIZE != STATE_SIZE + GOAL_SIZE || POLICY_ACTION_SIZE != 2) {
        fprintf(stderr, "policy.h is not a full-observation reacher policy (obs %d, action %d)\n",
                POLICY_OBS_SIZE, POLICY_ACTION_SIZE);
        return 2;
    }
    char err[1000] = "";
    mjModel *m = mj_loadXML(argv[1], NULL, err, sizeof(err));
    if (!m) {
        fprintf(stderr, "%s: cannot load the model: %s\n", argv[1], err);
        return 2;
    }
    const int skip_id = mj_name2id(m, mjOBJ_NUMERIC, "crl_frame_skip");
    const int tip = mj_name2id(m, mjOBJ_BODY, "fingertip");
    const int target = mj_name2id(m, mjOBJ_BODY, "target");
    if (skip_id < 0 || tip < 0 || target < 0 || m->nu != 2 || m->nq < 4) {
        fprintf(stderr, "%s: not the reacher model of a crl-distill export\n", argv[1]);
        mj_deleteModel(m);
        return 2;
    }
    const int frame_skip = (int)m->numeric_data[m->numeric_adr[skip_id]];
    const double period = frame_skip * m->opt.timestep;
    mjData *d = mj_makeData(m);
    const int steps = POLICY_EPISODE_LENGTH;
    double *infer_us = malloc(sizeof(double) * (size_t)steps * (size_t)episodes);
    double *period_err_us = malloc(sizeof(double) * (size_t)steps * (size_t)episodes);
    if (!infer_us || !period_err_us)
        return 1;
    int n_infer = 0, n_period = 0, successes = 0, rejected = 0;
    double sum_tag = 0.0, sum_tag2 = 0.0;
    float obs[POLICY_OBS_SIZE], action[POLICY_ACTION_SIZE], goal[GOAL_SIZE];
#ifdef POLICY_RECURRENT /* a GRU / LSTM student: its memory lives here, zeroed per episode */
    policy_state memory;
#define POLICY_ACT(o, a) policy_act(&memory, (o), (a))
#else
#define POLICY_ACT(o, a) policy_act((o), (a))
#endif

    for (int ep = 0; ep < episodes; ++ep) {
        /* The reacher env's start distribution: arm joints +-0.1 rad, velocities +-0.005,
           the target on a disc of radius 0.2 (its two slide joints). */
        mj_resetData(m, d);
        d->qpos[0] += uniform(-0.1, 0.1);
        d->qpos[1] += uniform(-0.1, 0.1);
        const double r = 0.2 * uniform(0.0, 1.0), a = 6.283185307179586 * uniform(0.0, 1.0);
        d->qpos[2] = r * cos(a);
        d->qpos[3] = r * sin(a);
        d->qvel[0] = uniform(-0.005, 0.005);
        d->qvel[1] = uniform(-0.005, 0.005);
        mj_forward(m, d);
#ifdef POLICY_RECURRENT
        policy_reset(&memory);
#endif
        for (int i = 0; i < GOAL_SIZE; ++i)
            goal[i] = (float)d->xpos[3 * target + i];
        int at_goal = 0;
        double dist = 0.0, next_tick = now_s(), last_tick = -1.0;
        for (int t = 0; t < steps; ++t) {
            const double tick = now_s();
            if (last_tick >= 0.0 && realtime)
                period_err_us[n_period++] = (tick - last_tick - period) * 1e6;
            last_tick = tick;
            observe(m, d, tip, goal, obs);
            const double t0 = now_s();
            if (POLICY_ACT(obs, action) != 0) { /* a bad sensor reading: hold still */
                action[0] = action[1] = 0.0f;
                ++rejected;
            }
            infer_us[n_infer++] = (now_s() - t0) * 1e6;
            d->ctrl[0] = action[0];
            d->ctrl[1] = action[1];
            for (int k = 0; k < frame_skip; ++k)
                mj_step(m, d);
            dist = 0.0;
            for (int i = 0; i < 3; ++i) {
                const double e = d->xpos[3 * tip + i] - goal[i];
                dist += e * e;
            }
            dist = sqrt(dist);
            at_goal += dist < POLICY_SUCCESS_THRESHOLD;
            if (realtime) {
                next_tick += period;
                const double wait = next_tick - now_s();
                if (wait > 0) {
                    struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
                    nanosleep(&ts, NULL);
                }
            }
        }
        successes += at_goal > 0;
        sum_tag += at_goal;
        sum_tag2 += (double)at_goal * at_goal;
        printf("goal %d: %s  time at goal %d/%d  final distance %.3f m\n", ep + 1,
               at_goal > 0 ? "reached" : "missed ", at_goal, steps, dist);
    }
    const double n = episodes, p = successes / n, mean = sum_tag / n;
    const double var = episodes > 1 ? (sum_tag2 - n * mean * mean) / (n - 1) : 0.0;
    printf("success_any %.3f +- %.3f, time at goal %.1f +- %.1f of %d over %d goals "
           "(threshold %g m); rejected observations %d\n",
           p, 1.96 * sqrt(p * (1 - p) / n), mean, 1.96 * sqrt(var > 0 ? var / n : 0.0), steps,
           episodes, POLICY_SUCCESS_THRESHOLD, rejected);
    qsort(infer_us, (size_t)n_infer, sizeof(double), cmp_double);
    printf("inference p50 %.2f us, p99 %.2f us per action", infer_us[n_infer / 2],
           infer_us[(int)(0.99 * (n_infer - 1))]);
    if (n_period) {
        for (int i = 0; i < n_period; ++i)
            period_err_us[i] = fabs(period_err_us[i]);
        qsort(period_err_us, (size_t)n_period, sizeof(double), cmp_double);
        printf("; period error p50 %.0f us, p99 %.0f us (period %.3f s)", period_err_us[n_period / 2],
               period_err_us[(int)(0.99 * (n_period - 1))], period);
    }
    printf("\n");
    free(infer_us);
    free(period_err_us);
    mj_deleteData(d);
    mj_deleteModel(m);
    return 0;
}
