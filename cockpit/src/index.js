/* virtzone's Cockpit page: libvirt's virtual networks, their firewalld zones, port forwards, per-network
 * allows, doctor's diagnosis and explain, live while the page is visible. Plain DOM with PatternFly's
 * CSS; the text comes through cockpit.gettext. */

/* global cockpit */

import "./index.css";
import {
    virtzone, json, libvirtNetworks, forwardAddArgs, explainArgs, doctorOrder, safeFixes,
} from "./virtzone.js";

const _ = cockpit.gettext;

/** How often the page reads everything again while it is visible (the issue asks for ≤ 2 s). */
const POLL_MS = 2000;

/** Creates an element: `h("td", { class: "x" }, "text", child…)`. */
function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === null || v === undefined || v === false)
            continue;
        if (k.startsWith("on"))
            el.addEventListener(k.substring(2), v);
        else
            el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
        if (c !== null && c !== undefined && c !== false)
            el.append(c instanceof Node ? c : String(c));
    }
    return el;
}

const $ = id => document.getElementById(id);

/** A PatternFly label: `color` one of red, orange, green, blue, grey. */
function label(text, color) {
    return h("span", { class: "pf-v5-c-label pf-m-compact" + (color ? " pf-m-" + color : "") },
             h("span", { class: "pf-v5-c-label__content" }, text));
}

/** PatternFly 5 styles a table's parts only with their own classes. */
function pfTable(table) {
    for (const part of ["thead", "tbody", "tr", "th", "td"]) {
        for (const el of table.querySelectorAll(part))
            el.classList.add("pf-v5-c-table__" + part);
    }
    return table;
}

/** Replaces a table's rows; `empty` is the text of the one row shown when there are none. */
function fillTable(table, rows, empty) {
    const body = table.tBodies[0];
    const columns = table.tHead.rows[0].cells.length;
    body.replaceChildren(...(rows.length
        ? rows
        : [h("tr", {}, h("td", { colspan: columns, class: "vz-empty" }, empty))]));
    pfTable(table);
}

/** An inline PatternFly alert with virtzone's sentence. */
function alert(message, variant) {
    return h("div", { class: "pf-v5-c-alert pf-m-inline pf-m-plain pf-m-" + (variant || "danger") },
             h("p", { class: "pf-v5-c-alert__title" }, message));
}

function showError(el, message) {
    el.replaceChildren(...(message ? [alert(message)] : []));
}

let limited = false;

/** Cockpit's convention without administrative access: say so, do not fail silently. */
function showLimited() {
    if (limited)
        return;
    limited = true;
    $("notices").replaceChildren(h("div", { class: "pf-v5-c-alert pf-m-warning", id: "limited-access" },
        h("p", { class: "pf-v5-c-alert__title" },
          _("Limited access: this page needs administrative access to read and change the firewall of virtual networks. Turn on administrative access and reload."))));
}

/** The message of a failed command, noticing a missing superuser. */
function failure(result) {
    if (result.problem === "access-denied" || result.problem === "authentication-failed") {
        showLimited();
        return _("Administrative access is required.");
    }
    return result.message || result.problem || cockpit.format(_("failed with exit status $0"), result.status);
}

/* --- networks --- */

function bindingCell(row) {
    if (!row)
        return h("td", { "data-label": _("Binding") }, _("not managed by virtzone"));
    const colors = { bound: "green", missing: "red", moved: "orange", unknown: "grey" };
    const words = { bound: _("bound"), missing: _("missing"), moved: _("moved"), unknown: _("unknown") };
    return h("td", { "data-label": _("Binding"), "data-state": row.state },
             label(words[row.state] || row.state, colors[row.state]),
             row.state === "moved" ? " " + cockpit.format(_("(now in $0)"), row.actual) : null);
}

function renderNetworks(nets, status, bindings) {
    const zones = new Map(((status && status.bridges) || []).map(b => [b.name, b.zone]));
    const byBridge = new Map((bindings || []).map(b => [b.bridge, b]));
    const rows = nets.networks.map(net => {
        const c = net.check || {};
        const bridge = c.bridge || null;
        let zone = "—";
        if (bridge && zones.has(bridge))
            zone = zones.get(bridge) || _("none (the default zone applies)");
        else if (!net.active)
            zone = _("not running");
        const check = net.error
            ? h("td", { "data-label": _("Pre-check") }, alert(net.error))
            : h("td", { "data-label": _("Pre-check"), "data-ok": String(c.ok) },
                label(c.ok ? _("works") : _("breaks"), c.ok ? "green" : "red"),
                h("div", { class: "vz-secondary" }, c.message || ""));
        return h("tr", { "data-network": net.name, "data-bridge": bridge || "" },
                 h("td", { "data-label": _("Network") }, net.name,
                   net.active ? null : h("span", { class: "vz-secondary" }, " " + _("(inactive)"))),
                 h("td", { "data-label": _("Forward mode") }, c.forward || "—"),
                 h("td", { "data-label": _("Bridge") }, bridge || "—"),
                 h("td", { "data-label": _("Zone"), class: "vz-zone" }, zone),
                 bindingCell(bridge && byBridge.get(bridge)),
                 check);
    });
    fillTable($("networks"), rows, nets.error || _("No libvirt networks."));
    // The forms offer the networks libvirt has, keeping what the user picked.
    for (const id of ["forward-network", "allow-network"]) {
        const select = $(id);
        const keep = select.value;
        select.replaceChildren(...nets.networks.map(n => h("option", { value: n.name }, n.name)));
        if (keep && nets.networks.some(n => n.name === keep))
            select.value = keep;
    }
    const bridges = ((status && status.bridges) || []).map(b => b.name);
    const select = $("explain-bridge");
    const keep = select.value;
    select.replaceChildren(...bridges.map(b => h("option", { value: b }, b)));
    if (keep && bridges.includes(keep))
        select.value = keep;
}

/* --- forwards and allows --- */

async function change(args, errorEl) {
    const result = await virtzone(args);
    showError(errorEl, result.ok ? null : failure(result));
    await refresh();
    return result.ok;
}

function renderForwards(forwards) {
    const words = { active: _("active"), inactive: _("inactive"), "waiting-for-address": _("waiting for address") };
    const colors = { active: "green", inactive: "grey", "waiting-for-address": "orange" };
    const rows = forwards.map(f => {
        const host = (f.host_address ? f.host_address + ":" : "") + f.host_port + "/" + f.proto;
        const guest = f.domain ? f.domain + (f.guest ? " (" + f.guest + ")" : "") : (f.guest || "—");
        return h("tr", { "data-forward": f.id, "data-host-port": f.host_port, "data-proto": f.proto },
                 h("td", { "data-label": _("ID") }, f.id),
                 h("td", { "data-label": _("Host") }, host),
                 h("td", { "data-label": _("Network") }, f.network || "—"),
                 h("td", { "data-label": _("Guest") }, guest),
                 h("td", { "data-label": _("Guest port") }, f.guest_port),
                 h("td", { "data-label": _("State"), "data-state": f.state },
                   label(words[f.state] || f.state, colors[f.state]),
                   f.reason ? h("div", { class: "vz-secondary" }, f.reason) : null),
                 h("td", { class: "pf-v5-c-table__action" },
                   h("button", {
                       class: "pf-v5-c-button pf-m-secondary pf-m-danger pf-m-small",
                       type: "button",
                       "aria-label": cockpit.format(_("Remove forward $0"), f.id),
                       onclick: () => change(["forward", "remove", String(f.id)], $("forward-error")),
                   }, _("Remove"))));
    });
    fillTable($("forwards"), rows, _("No port forwards."));
}

function renderAllows(allows) {
    const rows = allows.map(a => h("tr", { "data-allow": a.network + " " + a.what },
        h("td", { "data-label": _("Network") }, a.network),
        h("td", { "data-label": _("Open") }, a.what),
        h("td", { class: "pf-v5-c-table__action" },
          h("button", {
              class: "pf-v5-c-button pf-m-secondary pf-m-danger pf-m-small",
              type: "button",
              "aria-label": cockpit.format(_("Close $0 to network $1"), a.what, a.network),
              onclick: () => change(["allow", "remove", "--network", a.network, a.what], $("allow-error")),
          }, _("Remove")))));
    fillTable($("allows"), rows, _("No host services opened to a network."));
}

/* --- doctor --- */

let doctorChecks = [];

function renderDoctor(report, error) {
    if (!report) {
        $("doctor-summary").replaceChildren(alert(error));
        fillTable($("doctor"), [], "—");
        $("doctor-fix").disabled = true;
        return;
    }
    doctorChecks = report.checks;
    $("doctor-summary").textContent = report.problems || report.warnings
        ? cockpit.format(cockpit.ngettext("$0 problem", "$0 problems", report.problems), report.problems) + ", " +
          cockpit.format(cockpit.ngettext("$0 warning", "$0 warnings", report.warnings), report.warnings)
        : _("No problems found.");
    const colors = { problem: "red", warning: "orange", ok: "green", skipped: "grey" };
    const words = { problem: _("problem"), warning: _("warning"), ok: _("ok"), skipped: _("skipped") };
    const rows = doctorOrder(report.checks).map(c => h("tr", { "data-check": c.id, "data-status": c.status },
        h("td", { "data-label": _("Status") }, label(words[c.status] || c.status, colors[c.status])),
        h("td", { "data-label": _("Check") }, h("strong", {}, c.summary), h("div", { class: "vz-secondary" }, c.id)),
        h("td", { "data-label": _("Evidence") },
          c.evidence.length ? h("ul", { class: "vz-evidence" }, c.evidence.map(e => h("li", {}, e))) : "—"),
        h("td", { "data-label": _("Fix") },
          c.fix && c.status !== "ok"
              ? [h("code", {}, c.fix.command), " ", c.fix.safe ? label(_("safe"), "blue") : null]
              : "—")));
    fillTable($("doctor"), rows, "—");
    $("doctor-fix").disabled = safeFixes(report.checks).length === 0;
}

function openFixDialog() {
    const fixes = safeFixes(doctorChecks);
    if (!fixes.length)
        return;
    $("fix-dialog-commands").replaceChildren(...fixes.map(c => h("li", {}, h("code", {}, c.fix.command))));
    $("fix-dialog").hidden = false;
    $("fix-dialog-apply").focus();
}

function closeFixDialog() {
    $("fix-dialog").hidden = true;
    $("doctor-fix").focus();
}

async function applyFixes() {
    $("fix-dialog-apply").disabled = true;
    const result = await virtzone(["doctor", "--fix", "--yes", "--json"]);
    $("fix-dialog-apply").disabled = false;
    closeFixDialog();
    const report = json(result);
    if (!report || !report.fixes) {
        $("doctor-result").replaceChildren(alert(failure(result)));
    } else {
        $("doctor-result").replaceChildren(...report.fixes.map(f => alert(
            f.applied
                ? cockpit.format(_("Applied: $0"), f.command)
                : cockpit.format(_("Not applied: $0: $1"), f.command, f.error || ""),
            f.applied ? "success" : "danger")));
        renderDoctor(report);
    }
    await refresh();
}

/* --- explain --- */

function rule(by) {
    if (!by)
        return _("the base chain's policy");
    return cockpit.format("$0 ($1 $2, chain $3$4)", by.text, by.family, by.table, by.chain,
                          by.handle === null ? "" : cockpit.format(_(", handle $0"), by.handle));
}

function renderExplain(path) {
    const colors = { accept: "green", drop: "red", reject: "red", unknown: "grey" };
    const v = path.verdict.verdict;
    const steps = pfTable(
        h("table", { class: "pf-v5-c-table pf-m-compact pf-m-grid-md", role: "grid", id: "explain-steps" },
          h("thead", {}, h("tr", {}, [_("Table"), _("Chain"), _("Hook"), _("Priority"), _("Verdict"), _("Rule"), _("Via")]
                  .map(t => h("th", {}, t)))),
          h("tbody", {}, path.steps.map(s => h("tr", {},
              h("td", {}, s.family + " " + s.table),
              h("td", {}, s.chain),
              h("td", {}, s.hook),
              h("td", {}, s.prio),
              h("td", {}, s.verdict.verdict),
              h("td", {}, s.by ? h("code", {}, s.by.text) : _("policy")),
              h("td", {}, (s.via || []).join(" → ")))))));
    $("explain-result").replaceChildren(
        h("p", { id: "explain-verdict", "data-verdict": v, "data-handle": path.by ? String(path.by.handle) : "" },
          _("Verdict:"), " ", label(v, colors[v]), path.verdict.detail ? " " + path.verdict.detail : null),
        h("p", { id: "explain-rule" }, _("Decided by:"), " ", h("code", {}, rule(path.by))),
        steps);
}

async function explain(event) {
    event.preventDefault();
    const f = Object.fromEntries(new FormData($("explain-form")).entries());
    const result = await virtzone(explainArgs(f));
    const path = json(result);
    // Exit 0, 1 and 3 are verdicts with a path; 2 is bad input with virtzone's sentence.
    if (!path) {
        showError($("explain-error"), failure(result));
        $("explain-result").replaceChildren();
        return;
    }
    showError($("explain-error"), null);
    renderExplain(path);
}

/* --- refresh --- */

let running = null;
let again = false;

/** Reads everything once; a refresh asked for while one runs follows it. */
function refresh() {
    if (limited)
        return Promise.resolve();
    if (running) {
        again = true;
        return running;
    }
    running = (async () => {
        const [nets, status, list, forwards, allows, doctor] = await Promise.all([
            libvirtNetworks(),
            virtzone(["status", "--json"]),
            virtzone(["list", "--json"]),
            virtzone(["forward", "list", "--json"]),
            virtzone(["allow", "list", "--json"]),
            virtzone(["doctor", "--json"]),
        ]);
        renderNetworks(nets, json(status), json(list));
        if (forwards.ok)
            renderForwards(json(forwards) || []);
        else
            fillTable($("forwards"), [], failure(forwards));
        if (allows.ok)
            renderAllows(json(allows) || []);
        else
            fillTable($("allows"), [], failure(allows));
        const report = json(doctor);
        renderDoctor(report, report ? null : failure(doctor));
        document.body.setAttribute("data-refreshed", String(Date.now()));
    })().finally(() => {
        running = null;
        if (again) {
            again = false;
            refresh();
        }
    });
    return running;
}

let timer = null;

function visibility() {
    if (cockpit.hidden) {
        window.clearInterval(timer);
        timer = null;
    } else if (!timer) {
        refresh();
        timer = window.setInterval(() => { if (!running) refresh() }, POLL_MS);
    }
}

function init() {
    cockpit.translate();
    for (const table of document.querySelectorAll("table"))
        pfTable(table);
    const permission = cockpit.permission({ admin: true });
    permission.addEventListener("changed", () => {
        if (permission.allowed === false)
            showLimited();
    });
    // Cockpit's "Limited access" switch: the bridge's superuser is "none" then, and a root-only
    // command would wait or fail, so the page says what it needs instead.
    const superuser = cockpit.dbus(null, { bus: "internal" }).proxy("cockpit.Superuser", "/superuser");
    const checkSuperuser = () => cockpit.user().then(user => {
        if (user.id !== 0 && superuser.Current === "none")
            showLimited();
    });
    superuser.addEventListener("changed", checkSuperuser);
    // Poll only once the superuser state is known: without it every command would fail.
    superuser.wait(() => Promise.resolve(checkSuperuser()).catch(() => {}).then(() => {
        cockpit.addEventListener("visibilitychange", visibility);
        visibility();
    }));

    $("forward-form").addEventListener("submit", event => {
        event.preventDefault();
        const f = {
            proto: $("forward-proto").value,
            hostPort: $("forward-host-port").value.trim(),
            network: $("forward-network").value,
            guest: $("forward-guest").value.trim(),
            guestPort: $("forward-guest-port").value.trim(),
            hostAddress: $("forward-host-address").value.trim(),
        };
        change(forwardAddArgs(f), $("forward-error"));
    });
    $("allow-form").addEventListener("submit", event => {
        event.preventDefault();
        change(["allow", "add", "--network", $("allow-network").value, $("allow-what").value.trim()],
               $("allow-error"));
    });
    $("explain-form").addEventListener("submit", explain);
    $("doctor-fix").addEventListener("click", openFixDialog);
    $("fix-dialog-apply").addEventListener("click", applyFixes);
    $("fix-dialog-cancel").addEventListener("click", closeFixDialog);
    $("fix-dialog").addEventListener("keydown", event => {
        if (event.key === "Escape")
            closeFixDialog();
    });

    document.body.setAttribute("data-ready", "true");
}

document.addEventListener("DOMContentLoaded", init);
