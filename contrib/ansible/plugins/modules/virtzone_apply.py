#!/usr/bin/python
# -*- coding: utf-8 -*-
# GPL-2.0-or-later
"""Ansible module: converge virtzone to its drop-in files (virtzone apply)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: virtzone_apply
short_description: Converge virtzone's forwards, allows and bindings to its drop-in files
description:
  - Runs C(virtzone apply --json), which converges firewalld to the C(*.conf) files in
    /usr/lib/virtzone/virtzone.d, /run/virtzone/virtzone.d and /etc/virtzone/virtzone.d and to
    what was added with virtzone's CLI.
  - In check mode runs C(virtzone apply --check --json) instead, which touches nothing.
  - C(changed) is virtzone's own answer; in diff mode the change lines are returned as the diff.
options:
  binary:
    description: The virtzone executable.
    type: str
    default: virtzone
  state_dir:
    description: virtzone's state directory (default virtzone's own).
    type: path
supports_check_mode: true
author: virtzone developers
"""

EXAMPLES = r"""
- name: Converge virtzone
  virtzone.virtzone.virtzone_apply:
"""

RETURN = r"""
changes:
  description: One line per change made (or, in check mode, pending).
  returned: always
  type: list
  elements: str
"""

import json

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            binary=dict(type="str", default="virtzone"),
            state_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    cmd = [module.get_bin_path(module.params["binary"], required=True), "apply", "--json"]
    if module.check_mode:
        cmd.append("--check")
    if module.params["state_dir"]:
        cmd += ["--state-dir", module.params["state_dir"]]
    rc, out, err = module.run_command(cmd)
    try:
        report = json.loads(out)
    except ValueError:
        module.fail_json(msg="virtzone apply: %s" % (err.strip() or out.strip()), rc=rc)
    changes = report.get("changes", [])
    # 0: in sync or applied; 3: changes pending (check mode); 1 failed; 2 bad configuration.
    if rc not in (0, 3):
        module.fail_json(
            msg="; ".join(report.get("errors") or [err.strip()]), rc=rc, changes=changes
        )
    result = dict(changed=bool(report.get("changed")), changes=changes)
    if module._diff and changes:
        result["diff"] = dict(prepared="\n".join(changes) + "\n")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
