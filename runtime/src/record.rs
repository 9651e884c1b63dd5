//! MCAP recording with ROS 2 conventions (profile `ros2`, `ros2msg` schemas, `cdr` messages),
//! so Foxglove, `ros2 bag` and the `mcap`/`rosbags` Python packages open the files.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use rft_msgs::TypeInfo;

use crate::error::{Error, Result};

/// An MCAP file being written.
pub struct McapSink {
    writer: Option<mcap::Writer<BufWriter<File>>>,
    channels: HashMap<(String, &'static str), (u16, u32)>,
    path: PathBuf,
    messages: u64,
}

impl McapSink {
    pub fn create(path: &Path) -> Result<Self> {
        let err = |reason: String| Error::Record {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create directory: {e}")))?;
        }
        let file = File::create(path).map_err(|e| err(format!("cannot create file: {e}")))?;
        let writer = mcap::WriteOptions::new()
            .profile("ros2")
            .create(BufWriter::new(file))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            writer: Some(writer),
            channels: HashMap::new(),
            path: path.to_path_buf(),
            messages: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Writes one CDR message (encapsulation header included, as rosbag2 stores it).
    pub fn write(
        &mut self,
        topic: &str,
        info: &'static TypeInfo,
        cdr: &[u8],
        log_time_ns: u64,
        publish_time_ns: u64,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |reason: String| Error::Record {
            path: path.clone(),
            reason,
        };
        let Some(w) = self.writer.as_mut() else {
            return Err(err("already finished".into()));
        };
        let key = (topic.to_string(), info.name);
        let (channel_id, seq) = match self.channels.get_mut(&key) {
            Some(c) => {
                c.1 = c.1.wrapping_add(1);
                *c
            }
            None => {
                let schema = w
                    .add_schema(info.name, "ros2msg", info.schema.as_bytes())
                    .map_err(|e| err(e.to_string()))?;
                let mut meta = std::collections::BTreeMap::new();
                meta.insert("offered_qos_profiles".to_string(), String::new());
                let id = w
                    .add_channel(schema, topic, "cdr", &meta)
                    .map_err(|e| err(e.to_string()))?;
                self.channels.insert(key, (id, 0));
                (id, 0)
            }
        };
        w.write_to_known_channel(
            &mcap::records::MessageHeader {
                channel_id,
                sequence: seq,
                log_time: log_time_ns,
                publish_time: publish_time_ns,
            },
            cdr,
        )
        .map_err(|e| err(e.to_string()))?;
        self.messages += 1;
        Ok(())
    }

    /// Writes the summary and closes the file. Returns the number of messages.
    pub fn finish(&mut self) -> Result<u64> {
        if let Some(mut w) = self.writer.take() {
            w.finish().map_err(|e| Error::Record {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(self.messages)
    }
}

impl Drop for McapSink {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!(error = %e, "could not finish MCAP file");
        }
    }
}
