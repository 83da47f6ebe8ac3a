# The browser of the browser tests (crates/arbiter-cli/tests/browser.rs and the report and
# dashboard tests built on tests/common/browser.rs): Debian's `chromium`, driven headless
# through Debian's `chromium-driver` (chromedriver, WebDriver). Sourced by .ci/run (or by
# hand: `source .ci/browser.sh`): installs both with apt once, quietly, and exports where
# they are. Already installed, it only checks that they are there. Debian builds the two
# from one source, so their versions always match; nothing is downloaded at run time.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
fi

export ARBITER_CHROMIUM=/usr/bin/chromium
export ARBITER_CHROMEDRIVER=/usr/bin/chromedriver
