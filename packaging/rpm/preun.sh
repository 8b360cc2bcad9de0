# $1 = 0 on removal (not on upgrade).
if [ "$1" = "0" ]; then
    systemctl stop seccollab.service >/dev/null 2>&1 || true
fi
