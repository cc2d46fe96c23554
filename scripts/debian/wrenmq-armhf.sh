#!/bin/sh
# /usr/bin/wrenmq in the armhf package. Debian's armhf (and Raspberry Pi OS's) runs on
# ARMv6 boards (Pi Zero, Zero W, Pi 1) as well as on ARMv7/ARMv8 ones, so the package
# carries two static builds and picks the one for this CPU at every start: an SD card
# moved from a Pi 4 to a Pi Zero keeps working. exec keeps the process id (systemd's
# Type=notify needs the broker to be the main process).
case "$(uname -m)" in
  armv6*) exec /usr/libexec/wrenmq/wrenmq-armv6 "$@" ;;
  *) exec /usr/libexec/wrenmq/wrenmq-armv7 "$@" ;;
esac
