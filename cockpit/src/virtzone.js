/* virtzone's Cockpit page: how it talks to virtzone and libvirt.
 *
 * Every read and change goes through the `virtzone` command line (as root, through Cockpit's
 * superuser bridge), so the page decides nothing itself: virtzone validates every value and its one
 * sentence on standard error is what the user sees. See docs/json.md for the JSON shapes.
 */

/* global cockpit */

/** The result of one command: `ok` with its standard output, or the failure with virtzone's
 * sentence. Commands whose exit status is a verdict (doctor, check, explain) still print their JSON
 * on standard output, so `stdout` is kept on failure too. */
export function run(argv, input) {
    return new Promise(resolve => {
        const proc = cockpit.spawn(argv, { superuser: "require", err: "message" });
        // cockpit's own promise passes the output as the second argument of a failure, which a
        // native promise would drop.
        proc.then(
            stdout => resolve({ ok: true, stdout, status: 0, message: "" }),
            (ex, stdout) => resolve({
                ok: false,
                stdout: stdout || "",
                status: ex.exit_status === undefined ? null : ex.exit_status,
                problem: ex.problem || null,
                message: (ex.message || "").trim().replace(/^virtzone: /, ""),
            }));
        if (input !== undefined)
            proc.input(input);
    });
}

/** `virtzone ARGS…`. */
export function virtzone(args, input) {
    return run(["virtzone", ...args], input);
}

/** Parses a command's JSON output, or null when there is none. */
export function json(result) {
    if (!result.stdout)
        return null;
    try {
        return JSON.parse(result.stdout);
    } catch (e) {
        return null;
    }
}

/** libvirt's networks through virsh (the network driver answers for both libvirtd and
 * virtnetworkd): names with whether they run. */
export async function libvirtNetworks() {
    const uri = ["virsh", "--quiet", "-c", "network:///system"];
    const [active, inactive] = await Promise.all([
        run([...uri, "net-list", "--name"]),
        run([...uri, "net-list", "--inactive", "--name"]),
    ]);
    if (!active.ok)
        return { error: active.message || active.problem, networks: [] };
    const names = text => text.split("\n").map(s => s.trim()).filter(Boolean);
    const networks = [
        ...names(active.stdout).map(name => ({ name, active: true })),
        ...(inactive.ok ? names(inactive.stdout) : []).map(name => ({ name, active: false })),
    ];
    // Each network's pre-check verdict: its XML through `virtzone check` (exit 1 is a verdict).
    await Promise.all(networks.map(async net => {
        const xml = await run([...uri, "net-dumpxml", net.name]);
        if (!xml.ok) {
            net.error = xml.message;
            return;
        }
        const checked = await virtzone(["check", "--network-xml", "-", "--json"], xml.stdout);
        net.check = json(checked);
        if (!net.check)
            net.error = checked.message;
    }));
    networks.sort((a, b) => a.name.localeCompare(b.name));
    return { error: null, networks };
}

/** The argument list of `forward add` from the form's values (virtzone validates them). */
export function forwardAddArgs(f) {
    const args = ["forward", "add"];
    if (f.network)
        args.push("--network", f.network);
    // An address names a guest; anything else is a libvirt domain.
    if (/^[0-9.]+$/.test(f.guest) || f.guest.includes(":"))
        args.push("--guest", f.guest);
    else
        args.push("--domain", f.guest);
    if (f.hostAddress)
        args.push("--host-address", f.hostAddress);
    args.push(f.proto + "/" + f.hostPort + (f.guestPort ? ":" + f.guestPort : ""));
    return args;
}

/** The argument list of `explain` from the form's values. */
export function explainArgs(f) {
    const args = ["explain", "--bridge", f.bridge];
    if (f.direction === "to-host") {
        args.push("--to-host", f.service);
        if (f.address)
            args.push("--to", f.address);
    } else if (f.direction === "forward") {
        args.push("--forward");
        if (f.address)
            args.push("--to", f.address);
        args.push(f.service);
    } else {
        args.push("--from", f.address, f.service);
    }
    args.push("--json");
    return args;
}

/** doctor's checks, problems first, then warnings, then the rest in doctor's order. */
export function doctorOrder(checks) {
    const rank = { problem: 0, warning: 1, skipped: 2, ok: 3 };
    return checks
            .map((c, i) => ({ c, i }))
            .sort((a, b) => (rank[a.c.status] - rank[b.c.status]) || (a.i - b.i))
            .map(x => x.c);
}

/** The fixes `doctor --fix` applies itself: those of problems that doctor calls safe. */
export function safeFixes(checks) {
    return checks.filter(c => c.status === "problem" && c.fix && c.fix.safe);
}
