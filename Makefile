# virtzone: build and install (see docs/packaging.md).
#
#   make                      cargo build --release, then the man pages and completions into $(GEN_DIR)
#   make install              the above, then install everything under $(DESTDIR)$(PREFIX) and /etc
#   make install-files        install only, from an existing binary and generated docs (no cargo):
#                               make install-files VIRTZONE_BIN=path/to/virtzone GEN_DIR=dir
#   make uninstall            remove what install put there (zones and the hook only while unchanged)
#   make verify-tree DESTDIR=/some/root   check an installed tree (unit, firewalld config)
#   make clean                remove $(GEN_DIR)
#   make cockpit              rebuild the Cockpit page's assets (cockpit/dist) from cockpit/src with the
#                               locked toolchain (make cockpit-deps = npm ci, then esbuild)
#   make install-cockpit      install the Cockpit page into $(DESTDIR)$(COCKPITDIR) (the package
#                               virtzone-cockpit; not part of install)
#
# firewalld reads its stock configuration only from /usr/lib/firewalld, and systemd, D-Bus and
# libvirt look in fixed places too: keep PREFIX=/usr (the default) for a working system. A
# PREFIX=/usr/local install puts the zones where firewalld never looks.

PREFIX ?= /usr
SYSCONFDIR ?= /etc
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/virtzone
# firewalld's stock ("package") tier. An admin's edits live in /etc/firewalld and override it,
# which is why installing or removing these files never touches the admin's configuration.
FIREWALLDDIR ?= $(PREFIX)/lib/firewalld
DBUS_POLICYDIR ?= $(DATADIR)/dbus-1/system.d
DBUS_SERVICEDIR ?= $(DATADIR)/dbus-1/system-services
# The distribution's own answer when PREFIX is the system's (Debian 12 says /lib/systemd/system,
# the same directory as /usr/lib/systemd/system on its merged /usr).
SYSTEMDUNITDIR ?= $(or $(if $(filter /usr,$(PREFIX)),$(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null)),$(PREFIX)/lib/systemd/system)
LIBVIRT_HOOKDIR ?= $(SYSCONFDIR)/libvirt/hooks/network.d
LIBVIRT_QEMU_HOOKDIR ?= $(SYSCONFDIR)/libvirt/hooks/qemu.d
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
# Debian's zsh reads vendor-completions; other distributions' site-functions.
ZSHCOMPDIR ?= $(if $(wildcard /etc/debian_version),$(DATADIR)/zsh/vendor-completions,$(DATADIR)/zsh/site-functions)
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
# Cockpit finds its packages in $(DATADIR)/cockpit/NAME.
COCKPITDIR ?= $(DATADIR)/cockpit/virtzone
NPM ?= npm
NODE ?= node
# ZONES=no leaves the zone and policy files out, for distributions whose libvirt package already
# ships /usr/lib/firewalld/zones/libvirt.xml and its policies (Debian 12, Fedora): two packages
# cannot own one file.
ZONES ?= yes

CARGO ?= cargo
CARGOFLAGS ?= --locked
CARGO_TARGET_DIR ?= target
VIRTZONE_BIN ?= $(CARGO_TARGET_DIR)/release/virtzone
GEN_DIR ?= $(CARGO_TARGET_DIR)/gen

INSTALL ?= install
SED ?= sed

ZONE_FILES := $(wildcard zones/*.xml)
POLICY_FILES := $(wildcard zones/policies/*.xml)
DOC_FILES := $(wildcard docs/*.md)
# The paths the shipped files name, rewritten when installing elsewhere, so that the unit, the
# hook and the binary agree.
SUBST := $(SED) -e 's|/usr/bin/virtzone|$(BINDIR)/virtzone|g'

export CARGO_TARGET_DIR

.PHONY: all build gen install install-files install-bin install-zones install-dbus install-systemd \
	install-hook install-man install-completions install-docs uninstall verify-tree clean \
	cockpit cockpit-deps install-cockpit uninstall-cockpit

all: build gen

build:
	$(CARGO) build --release $(CARGOFLAGS)

# The generator is an example (examples/gen-docs.rs) because clap_mangen and clap_complete are only
# needed at build time, never in the binary.
gen:
	$(CARGO) run --release $(CARGOFLAGS) --example gen-docs -- $(GEN_DIR)

install: all
	$(MAKE) install-files

install-files: install-bin install-zones install-dbus install-systemd install-hook install-man \
	install-completions install-docs

install-bin:
	@test -x "$(VIRTZONE_BIN)" || { echo "no binary at $(VIRTZONE_BIN): run make (or set VIRTZONE_BIN)" >&2; exit 1; }
	$(INSTALL) -D -m 0755 "$(VIRTZONE_BIN)" "$(DESTDIR)$(BINDIR)/virtzone"

# A file of the same name that is not ours (another package's, an admin's) is kept: overwriting
# it would silently change somebody else's firewall. In an empty DESTDIR nothing is ever kept.
install-zones:
ifeq ($(ZONES),yes)
	@set -e; for f in $(ZONE_FILES) $(POLICY_FILES); do \
	    case $$f in zones/policies/*) sub=policies ;; *) sub=zones ;; esac; \
	    t="$(DESTDIR)$(FIREWALLDDIR)/$$sub/$${f##*/}"; \
	    if [ -e "$$t" ] && ! cmp -s "$$f" "$$t"; then \
	        echo "keeping $$t: it is not virtzone's (another package's or an admin's)"; \
	    else \
	        echo "$(INSTALL) -D -m 0644 $$f $$t"; $(INSTALL) -D -m 0644 "$$f" "$$t"; \
	    fi; \
	done
else
	@echo "ZONES=$(ZONES): not installing the zone and policy files"
endif

install-dbus:
	$(INSTALL) -D -m 0644 dbus/org.virtzone.VirtZone1.conf "$(DESTDIR)$(DBUS_POLICYDIR)/org.virtzone.VirtZone1.conf"
	$(INSTALL) -D -m 0644 dbus/org.virtzone.VirtZone1.service "$(DESTDIR)$(DBUS_SERVICEDIR)/org.virtzone.VirtZone1.service"
	$(INSTALL) -D -m 0644 dbus/org.virtzone.VirtZone1.xml "$(DESTDIR)$(DATADIR)/dbus-1/interfaces/org.virtzone.VirtZone1.xml"

install-systemd:
	$(INSTALL) -d "$(DESTDIR)$(SYSTEMDUNITDIR)"
	$(SUBST) systemd/virtzone.service >"$(DESTDIR)$(SYSTEMDUNITDIR)/virtzone.service"
	chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/virtzone.service"

# The hooks (network and qemu) live in /etc: like the zones, an existing hook with other content
# (an admin's edit) is kept.
install-hook:
	@set -e; new=$$(mktemp); trap 'rm -f "$$new"' EXIT; \
	for h in network qemu; do \
	    case $$h in network) d="$(LIBVIRT_HOOKDIR)" ;; *) d="$(LIBVIRT_QEMU_HOOKDIR)" ;; esac; \
	    t="$(DESTDIR)$$d/50-virtzone"; src="libvirt/hooks/$$h.d/50-virtzone"; \
	    $(SUBST) "$$src" >"$$new"; \
	    if [ -e "$$t" ] && ! cmp -s "$$new" "$$t"; then \
	        echo "keeping $$t: it differs from virtzone's (an admin's edit?)"; \
	    else \
	        echo "$(INSTALL) -D -m 0755 $$src $$t"; \
	        $(INSTALL) -D -m 0755 "$$new" "$$t"; \
	    fi; \
	done

install-man:
	@test -f "$(GEN_DIR)/man/virtzone.8" || { echo "no man pages in $(GEN_DIR)/man: run make gen (or set GEN_DIR)" >&2; exit 1; }
	$(INSTALL) -d "$(DESTDIR)$(MANDIR)/man8"
	$(INSTALL) -m 0644 "$(GEN_DIR)"/man/*.8 "$(DESTDIR)$(MANDIR)/man8/"

install-completions:
	$(INSTALL) -D -m 0644 "$(GEN_DIR)/completions/virtzone.bash" "$(DESTDIR)$(BASHCOMPDIR)/virtzone"
	$(INSTALL) -D -m 0644 "$(GEN_DIR)/completions/_virtzone" "$(DESTDIR)$(ZSHCOMPDIR)/_virtzone"
	$(INSTALL) -D -m 0644 "$(GEN_DIR)/completions/virtzone.fish" "$(DESTDIR)$(FISHCOMPDIR)/virtzone.fish"

install-docs:
	$(INSTALL) -d "$(DESTDIR)$(DOCDIR)"
	$(INSTALL) -m 0644 README.md $(DOC_FILES) "$(DESTDIR)$(DOCDIR)/"

# The Cockpit page. cockpit/dist is committed, so packages build without npm or a network; `make
# cockpit` rebuilds it from cockpit/src with the toolchain locked in cockpit/package-lock.json, and
# a test (tests/cockpit.rs) checks that the committed dist is exactly that build.
COCKPIT_FILES := index.html index.js index.css manifest.json

cockpit: cockpit-deps
	cd cockpit && $(NODE) build.mjs

cockpit-deps:
	cd cockpit && $(NPM) ci --no-audit --no-fund

install-cockpit:
	@for f in $(COCKPIT_FILES); do \
	    test -f "cockpit/dist/$$f" || { echo "no cockpit/dist/$$f: run make cockpit" >&2; exit 1; }; \
	done
	$(INSTALL) -d "$(DESTDIR)$(COCKPITDIR)"
	$(INSTALL) -m 0644 $(addprefix cockpit/dist/,$(COCKPIT_FILES)) "$(DESTDIR)$(COCKPITDIR)/"

uninstall-cockpit:
	rm -rf "$(DESTDIR)$(COCKPITDIR)"

# Removes exactly what install-files put there. Zones and the hook go only while their content is
# still ours; the admin's /etc/firewalld is never touched. Run `firewall-cmd --reload` afterwards
# (bridges still in the zones fall back to firewalld's default zone then).
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/virtzone"
	rm -f "$(DESTDIR)$(DBUS_POLICYDIR)/org.virtzone.VirtZone1.conf" \
	    "$(DESTDIR)$(DBUS_SERVICEDIR)/org.virtzone.VirtZone1.service" \
	    "$(DESTDIR)$(DATADIR)/dbus-1/interfaces/org.virtzone.VirtZone1.xml"
	rm -f "$(DESTDIR)$(SYSTEMDUNITDIR)/virtzone.service"
	rm -f "$(DESTDIR)$(MANDIR)"/man8/virtzone.8 "$(DESTDIR)$(MANDIR)"/man8/virtzone-*.8
	rm -f "$(DESTDIR)$(BASHCOMPDIR)/virtzone" "$(DESTDIR)$(ZSHCOMPDIR)/_virtzone" \
	    "$(DESTDIR)$(FISHCOMPDIR)/virtzone.fish"
	rm -rf "$(DESTDIR)$(DOCDIR)"
	@set -e; for f in $(ZONE_FILES) $(POLICY_FILES); do \
	    case $$f in zones/policies/*) sub=policies ;; *) sub=zones ;; esac; \
	    t="$(DESTDIR)$(FIREWALLDDIR)/$$sub/$${f##*/}"; \
	    if [ -e "$$t" ]; then \
	        if cmp -s "$$f" "$$t"; then echo "rm -f $$t"; rm -f "$$t"; \
	        else echo "keeping $$t: it is not virtzone's"; fi; \
	    fi; \
	done
	@set -e; for h in network qemu; do \
	    case $$h in network) d="$(LIBVIRT_HOOKDIR)" ;; *) d="$(LIBVIRT_QEMU_HOOKDIR)" ;; esac; \
	    t="$(DESTDIR)$$d/50-virtzone"; \
	    if [ -e "$$t" ]; then \
	        if $(SUBST) "libvirt/hooks/$$h.d/50-virtzone" | cmp -s - "$$t"; then echo "rm -f $$t"; rm -f "$$t"; \
	        else echo "keeping $$t: it differs from virtzone's"; fi; \
	    fi; \
	done

# Checks an installed tree: with DESTDIR, a staging tree; without, the live system.
# systemd-analyze resolves the unit's dependencies, ExecStart and man page inside the tree, so a
# staging tree is checked in a scratch copy that borrows systemd's own units from this host.
# firewalld's check needs its stock services (dhcp, dns, ...) beside the zones: point
# FIREWALLD_STOCK at a firewalld default config for a staging tree (e.g. /usr/lib/firewalld).
FIREWALLD_STOCK ?=
verify-tree:
ifeq ($(DESTDIR),)
	systemd-analyze verify "$(SYSTEMDUNITDIR)/virtzone.service"
	firewall-offline-cmd --check-config
else
	@set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	cp -a "$(DESTDIR)/." "$$scratch/"; \
	mkdir -p "$$scratch/usr/lib/systemd/system" "$$scratch/etc/firewalld"; \
	test -e "$$scratch/etc/firewalld/firewalld.conf" || echo DefaultZone=public >"$$scratch/etc/firewalld/firewalld.conf"; \
	cp -an /usr/lib/systemd/system/. "$$scratch/usr/lib/systemd/system/"; \
	echo "systemd-analyze verify --root=$(DESTDIR) $(SYSTEMDUNITDIR)/virtzone.service"; \
	MANPATH="$$scratch$(MANDIR)" systemd-analyze verify --root="$$scratch" "$(SYSTEMDUNITDIR)/virtzone.service"; \
	fw="$$scratch$(FIREWALLDDIR)"; mkdir -p "$$fw"; \
	if [ -n "$(FIREWALLD_STOCK)" ]; then cp -an "$(FIREWALLD_STOCK)/." "$$fw/"; fi; \
	echo "firewall-offline-cmd --check-config on $(DESTDIR)$(FIREWALLDDIR)"; \
	firewall-offline-cmd --system-config "$$scratch/etc/firewalld" --default-config "$$fw" --check-config
endif

clean:
	rm -rf "$(GEN_DIR)"
