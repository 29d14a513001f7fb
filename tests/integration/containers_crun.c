/* containers_crun.c (included by test_containers.c): the runc tests'
 * 512 MiB through a 64 MiB local limit with crun as the runtime: through
 * xmem-runtime (XMEM_RUNTIME=crun) and through crun with the hook. crun
 * refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported,
 * drop all controllers from cgroupv2"), so these run on cgroup v2 (and pure
 * v1) hosts and skip on hybrid ones. */

/* Skip the test unless root with crun, on a layout crun runs on. */
static void need_crun(void)
{
        const char *why = ctr_tool_missing("crun");

        if (why)
                harness_skip(teardown, "%s", why);
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
        need_crun();
        paged_512m("crun-rt", "crun", false);
}

Test(containers, crun_hook_512m_through_64m_local, .init = setup_memd, .fini = teardown,
     .timeout = 300)
{
        need_crun();
        paged_512m("crun-hook", "crun", true);
}
