/* containers_crun.c (included by test_containers.c): the runc tests'
 * 512 MiB through a 64 MiB local limit with crun as the runtime: through
 * xmem-runtime (XMEM_RUNTIME=crun) and through crun with the hook. crun
 * refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported,
 * drop all controllers from cgroupv2"), so these run on cgroup v2 (and pure
 * v1) hosts and skip on hybrid ones. */
/* Skip the test unless root with crun, on a layout crun runs on. */
static void need_crun(void)
{
        struct cmd_result r;

        if (!harness_is_root())
                harness_skip(teardown, "container tests need root");
        ctr_run((const char *const[]){"crun", "--version", NULL}, NULL, 10, &r);
        if (!ctr_exited(&r, 0))
                harness_skip(teardown, "crun is not installed (scripts/deps.sh installs it)");
        if (!harness_is_cgroup2("/sys/fs/cgroup") && harness_is_cgroup2("/sys/fs/cgroup/unified"))
                harness_skip(
                    teardown,
                    "crun refuses the hybrid cgroup layout (/sys/fs/cgroup is not cgroup2)");
        if (!harness_cg_version())
                harness_skip(teardown, "%s", HARNESS_CG_NONE);
}

Test(containers, crun_runtime_512m_through_64m_local, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        char bundle[256];
        struct cmd_result r;

        need_crun();
        ctr_bundle(&env, "crun-rt", fill_and_report("512"), xmem_64m, NULL, bundle, sizeof(bundle));
        ctr_runtime_run_with(&env, "crun", bundle, "crun-rt", 240, &r);
        cr_assert(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        expect_within(r.out, 64 << 20);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
}

Test(containers, crun_hook_512m_through_64m_local, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        char bundle[256];
        struct cmd_result r;

        need_crun();
        ctr_bundle(&env, "crun-hook", fill_and_report("512"), xmem_64m, env.sock, bundle,
                   sizeof(bundle));
        ctr_runc_run(&env, "crun", bundle, "crun-hook", 240, &r);
        cr_assert(ctr_exited(&r, 0) && strstr(r.out, "fill-ok 512 MiB"), "status %d: %s %s",
                  r.status, r.out, r.err);
        expect_within(r.out, 64 << 20);
        cr_expect_eq(ctr_memd_count(&env), 0, "poststop did not detach");
}
