/* containers_resize.c (included by test_containers.c): a runc container's
 * local limit lowered and raised while it runs (xmemctl resize, docs/memd.md
 * "Resize and conversion"): conv_prog keeps 4 writers checking 400 MiB; at
 * 64M the container's cgroup usage comes under 64 MiB within seconds (its
 * local memory converted to file memory in its io.xmem.file-dir, its arena
 * evicted to the appliance), at 512M it converts back; every page checks. */

/* xmemctl --socket SOCK ARGS: exit 0 asserted. */
static void resize_ctl(const char *const *args)
{
        const char *argv[12] = {getenv("XMEM_CTL"), "--socket", env.sock};
        struct cmd_result r;

        for (int i = 0; args[i] && i < 8; i++)
                argv[3 + i] = args[i];
        ctr_run(argv, NULL, 20, &r);
        cr_assert(ctr_exited(&r, 0), "xmemctl %s: %s%s", args[0], r.out, r.err);
}

Test(containers, runc_resize_512m_to_64m_and_back_live, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        char bundle[256], files[128], ann[512], path[320], out[16384];
        struct harness_cg cg;
        struct cmd_result r;
        int st;

        ctr_need_root_runc();
        if (!ctr_cgroup(&env, "rsz", &cg))
                harness_skip(teardown, "%s", HARNESS_CG_NONE);
        cr_assert(getenv("XMEM_CONV_PROG"), "XMEM_CONV_PROG is not set");
        ctr_run((const char *const[]){getenv("XMEM_MKROOTFS"), env.rootfs, getenv("XMEM_CONV_PROG"),
                                      NULL},
                NULL, 60, &r);
        cr_assert(ctr_exited(&r, 0), "mkrootfs: %s", r.err);
        snprintf(files, sizeof(files), "%s/files", env.dir);
        cr_assert(mkdir(files, 0700) == 0);
        snprintf(ann, sizeof(ann),
                 "{\"io.xmem.enable\":\"true\",\"io.xmem.local-limit\":\"512M\","
                 "\"io.xmem.external\":\"1G\",\"io.xmem.file-dir\":\"%s\"}",
                 files);
        ctr_bundle(&env, "rsz",
                   (const char *const[]){"/bin/conv_prog", "400", "4", "run", "120", NULL}, ann,
                   env.sock, bundle, sizeof(bundle));
        pid_t pid = ctr_run_async(&env, bundle, "rsz", "verified 102400 pages");
        uint64_t usage = 0;
        for (int i = 0; i < 600 && usage < (360ULL << 20); i++) {
                usleep(100000);
                /* not harness_cg_usage: runc may not have made it yet */
                snprintf(path, sizeof(path), "%s/%s", cg.path,
                         cg.version == 2 ? "memory.current" : "memory.usage_in_bytes");
                if (ctr_read_file(path, out, sizeof(out)))
                        usage = strtoull(out, NULL, 10);
        }
        cr_assert_geq(usage, 360ULL << 20, "the container did not fill (%llu)",
                      (unsigned long long)usage);

        long t0 = harness_now_ms();
        resize_ctl((const char *const[]){"resize", "rsz", "--local-limit", "64M", NULL});
        uint64_t limit = 0;
        for (int i = 0; i < 600; i++) {
                limit = harness_cg_limit(&cg);
                usage = harness_cg_usage(&cg);
                if (limit == 64ULL << 20 && usage <= 64ULL << 20)
                        break;
                usleep(100000);
        }
        long took = harness_now_ms() - t0;
        cr_expect(limit == 64ULL << 20 && usage <= 64ULL << 20,
                  "limit %llu usage %llu after %ld ms", (unsigned long long)limit,
                  (unsigned long long)usage, took);
        cr_log_info("resized to 64M: usage %llu MiB after %ld ms",
                    (unsigned long long)(usage >> 20), took);
        sleep(3); /* running at 64M */
        resize_ctl((const char *const[]){"resize", "rsz", "--local-limit", "512M", NULL});
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        snprintf(path, sizeof(path), "%s/rsz.out", env.dir);
        ctr_read_file(path, out, sizeof(out));
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "container: %s", out);
        cr_expect(!strstr(out, "MISMATCH"), "%s", out);
        cr_log_info("%s", out);
}
