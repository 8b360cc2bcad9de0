# $1 = 1 on install, 2 on upgrade.
systemd-sysusers /usr/lib/sysusers.d/seccollab.conf
install -d -m 0750 -o seccollab -g seccollab /var/lib/seccollab
install -d -m 0755 -o root -g root /usr/lib/seccollab/plugins
chown root:seccollab /etc/seccollab /etc/seccollab/seccollab.toml
chmod 0750 /etc/seccollab
chmod 0640 /etc/seccollab/seccollab.toml
chown root:seccollab /etc/seccollab/policies /etc/seccollab/policies/yara \
    /etc/seccollab/policies/security.toml /etc/seccollab/policies/yara/*.yar
systemctl daemon-reload >/dev/null 2>&1 || true
if [ "$1" = "2" ] && systemctl is-active --quiet seccollab.service; then
    systemctl restart seccollab.service || true
fi
if [ "$1" = "1" ]; then
    echo "SecCollab is installed but not enabled: edit /etc/seccollab/seccollab.toml, run"
    echo "'seccollab --config /etc/seccollab/seccollab.toml config check', then 'systemctl enable --now seccollab'"
    echo "and create the first administrator with 'seccollab user add --admin'."
fi
