# PyInstaller hook for webrtcvad as the webrtcvad-wheels distribution installs it: the
# contributed hook copies the metadata of "webrtcvad", a distribution that is not there.
from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("webrtcvad-wheels")
